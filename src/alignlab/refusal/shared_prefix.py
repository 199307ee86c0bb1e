"""Last-position log-probs of a batch whose rows share a token prefix, without padding and with the prefix computed
once (issue 19 §2).

The selection, search and subspace stages score hundreds of interventions on the same few prompt batches, and
every intervention acts position by position (directional ablation, activation addition), so the forward can run
on ``models.packing``'s packs (the prefix once, then every row's own tokens under a block mask) instead of the
left-padded batch. The fast path is checked once against the full forward (``ok``); a model it does not reproduce
(no 4-D mask support, a sliding window shorter than a pack, a head that differs) gets full forwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import torch

from alignlab.models.chat import ChatFormat, Encoded
from alignlab.models.packing import packed_last_logits, window_packs
from alignlab.models.prefix_split import unpadded_rows
from alignlab.refusal.forward import COUNTER, last_logprobs


class SharedPrefix:
    """``last_logprobs()`` of ``enc`` (equal to ``forward.last_logprobs(model, enc)`` within float error) under
    whatever hooks are active at the call. Construct it outside any hook context: ``baseline`` is the model's
    own log-probs (from the packs once they are checked: the full left-padded forward runs on ``check_rows``
    rows only, the first and last of each pack)."""

    def __init__(self, model: torch.nn.Module, enc: Encoded, min_prefix: int = 4, atol: float = 1e-3,
                 pack_tokens: int = 512, check_rows: int = 8, batch_size: int | None = None) -> None:
        """``batch_size`` bounds the rows of a full forward where the packs are not used (None: all at once)."""
        self.model, self.enc, self.batch_size = model, enc, batch_size
        self.packs = window_packs(model, enc.input_ids, enc.attention_mask, pack_tokens, min_prefix)
        found = unpadded_rows(enc.input_ids, enc.attention_mask, min_prefix)
        self.p = 0 if found is None else found[1]  # the rows' shared prefix, packed or not (window)
        fast = self._checked(atol, check_rows) if self.packs else None
        self.ok = fast is not None
        self.baseline = fast if fast is not None else self._full()  # [b, vocab]

    @property
    def saved_fraction(self) -> float:
        """Token positions a forward no longer computes, over those of the full left-padded batch."""
        if not self.ok or not self.packs:
            return 0.0
        return 1.0 - sum(int(pk.ids.shape[1]) for pk in self.packs) / self.enc.input_ids.numel()

    def last_logprobs(self) -> torch.Tensor:
        """Float64 next-token log-softmax at the last prompt position: [batch, vocab]."""
        if not self.ok:
            return self._full()
        return self._fast()

    def _full(self) -> torch.Tensor:
        """The full left-padded forward, ``batch_size`` rows at a time."""
        b = int(self.enc.input_ids.shape[0])
        step = self.batch_size or max(b, 1)
        return torch.cat([last_logprobs(self.model, self.enc, slice(i, i + step)) for i in range(0, b, step)])

    def _fast(self) -> torch.Tensor:
        assert self.packs is not None
        COUNTER.forwards += 1
        with torch.no_grad():
            logits = packed_last_logits(self.model, self.packs, self.enc.input_ids.shape[0])  # [b, vocab]
        return torch.log_softmax(logits.double(), dim=-1)

    def _checked(self, atol: float, check_rows: int) -> torch.Tensor | None:
        """The packed log-probs when they match the full forward on the checked rows, else None."""
        assert self.packs is not None
        ends = sorted({row for pk in self.packs for row in (pk.rows[0], pk.rows[-1])})
        spread = torch.linspace(0, len(ends) - 1, min(check_rows, len(ends))).round().long().unique()
        rows = torch.tensor([ends[i] for i in spread.tolist()], device=self.enc.input_ids.device)  # first, last, between
        try:
            fast = self._fast()
        except Exception:  # noqa: BLE001 - any failure of the fast path means "use full forwards"
            return None
        full = last_logprobs(self.model, self.enc, rows)  # [len(rows), vocab]
        if fast.shape[0] != self.enc.input_ids.shape[0] or not bool((fast[rows] - full).abs().max() < atol):
            return None
        return fast


def shared_logprobs(model: torch.nn.Module, fmt: ChatFormat, texts: Sequence[str], batch_size: int,
                    context: AbstractContextManager | None = None) -> torch.Tensor:
    """``forward.logprobs_for`` ([n, vocab] float64, CPU), optionally inside a hook context, with the texts' shared
    template prefix computed once per pack (full forwards of ``batch_size`` rows where the packs are not used; the
    packs are checked against the full forward on a few rows, under the same hooks)."""
    enc = fmt.encode(list(texts), device=next(model.parameters()).device, strict=False)
    with context or nullcontext():
        return SharedPrefix(model, enc, batch_size=batch_size).baseline.cpu()
