"""Non-finite checks that do not stall an accelerator every step.

On the CPU a check raises at once (reading a flag costs nothing there). On a GPU, ``bool(tensor)`` waits for
every queued kernel, which costs a few percent of SAE throughput per step; there the first failing step is
recorded on the device instead, and ``raise_pending`` (called at log steps, before checkpoints and at the end
of training) raises the same one-line error naming that step. No checkpoint is written past a failure.
"""

from __future__ import annotations

import torch
from torch import Tensor

from alignlab.errors import AlignlabError


class FiniteGuard:
    def __init__(self, device: torch.device, message: str, deferred: bool | None = None) -> None:
        """``message`` is formatted with ``step``, e.g. ``"loss became non-finite at step {step}"``;
        ``deferred`` defaults to True on accelerators and False on the CPU."""
        self.message = message
        self.first_bad: Tensor | None = None
        if deferred if deferred is not None else device.type != "cpu":
            self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def check(self, ok: Tensor, step: int) -> None:
        """``ok`` is a 0-d bool tensor (e.g. ``torch.isfinite(loss)``) computed at ``step``."""
        if self.first_bad is None:
            if not bool(ok):
                raise AlignlabError(self.message.format(step=step))
            return
        self.first_bad.masked_fill_((self.first_bad < 0) & ~ok, step)

    def raise_pending(self) -> None:
        if self.first_bad is not None:
            bad = int(self.first_bad)
            if bad >= 0:
                raise AlignlabError(self.message.format(step=bad))
