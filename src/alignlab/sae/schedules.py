"""Training schedules (spec §4). LR, lambda warm-up and p are pure functions of the step, so resume is exact;
the p-annealing lambda rescale depends on recent batches and keeps an explicit, checkpointed state.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

LR_SCHEDULES = ("constant", "cosine", "linear_decay_tail")


def lr_factor(step: int, total_steps: int, warmup: int, decay_steps: int, schedule: str, lr_end_frac: float) -> float:
    """Multiplier of the base LR at ``step`` (0-based): linear warm-up, then constant / cosine / linear tail."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or decay_steps <= 0:
        return 1.0
    if schedule == "cosine":
        span = max(1, total_steps - warmup)
        t = min(1.0, (step - warmup) / span)
        return lr_end_frac + (1 - lr_end_frac) * 0.5 * (1 + math.cos(math.pi * t))
    start = total_steps - decay_steps  # linear_decay_tail: decay over the final decay_steps
    if step < start:
        return 1.0
    t = min(1.0, (step - start) / decay_steps)
    return 1.0 - (1.0 - lr_end_frac) * t


def resample_lr_factor(step: int, resample_steps: tuple[int, ...], ramp: int = 1000) -> float:
    """After a resample at step r the LR drops to 0.1x and returns to 1x on a cosine ramp over ``ramp`` steps
    (Bricken et al. 2023, "Neuron Resampling")."""
    past = [r for r in resample_steps if r <= step]
    if not past:
        return 1.0
    dt = step - max(past)
    if dt >= ramp:
        return 1.0
    return 0.1 + 0.9 * 0.5 * (1 - math.cos(math.pi * dt / ramp))


def l1_factor(step: int, warmup: int) -> float:
    """Linear lambda warm-up from 0 (spec §4)."""
    if warmup <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup)


@dataclass
class PAnnealer:
    """p-annealing of Karvonen et al. (arXiv 2408.00113 §4.3).

    p stays at ``p_start`` until ``anneal_start``, then falls linearly to ``p_end`` in ``n_updates`` discrete
    steps spread over [anneal_start, total_steps). At each change the coefficient is rescaled,
      lambda_{s+1} = lambda_s * sum_{last q batches} sum_i f_i^{p_s} / sum_{last q batches} sum_i f_i^{p_{s+1}},
    so that the penalty strength stays locally constant.
    """

    p_start: float
    p_end: float
    anneal_start: int
    total_steps: int
    n_updates: int
    q: int
    lam: float
    """Current lambda before warm-up scaling."""
    history: deque = field(default_factory=deque)
    """(sum f^p_now, sum f^p_next) of the last q batches."""

    def __post_init__(self) -> None:
        self.history = deque(self.history, maxlen=self.q)

    def update_steps(self) -> list[int]:
        start = min(self.anneal_start, self.total_steps)
        span = self.total_steps - start
        return [start + (j * span) // self.n_updates for j in range(self.n_updates)]

    def p_at(self, step: int) -> float:
        """p in force at ``step`` (pure function of the step)."""
        done = sum(1 for s in self.update_steps() if s <= step)
        return self.p_start + (self.p_end - self.p_start) * done / self.n_updates

    def p_next(self, step: int) -> float:
        done = sum(1 for s in self.update_steps() if s <= step)
        return self.p_start + (self.p_end - self.p_start) * min(done + 1, self.n_updates) / self.n_updates

    def before_step(self, step: int) -> None:
        """Apply the lambda rescale when ``step`` is an update step (uses the batches before it)."""
        if step in self.update_steps() and self.history:
            old = sum(h[0] for h in self.history)
            new = sum(h[1] for h in self.history)
            if new > 0:
                self.lam = self.lam * old / new
            self.history.clear()

    @torch.no_grad()
    def record(self, step: int, acts: Tensor, reduce: Callable[[Tensor], Tensor] | None = None) -> None:
        """Remember sum_i f_i^p at the current and the next p for this batch ([B, d_sae], f >= 0).

        ``reduce`` sums the pair over DDP ranks, so every rank rescales lambda by the global-batch ratio.
        """
        upcoming = [s for s in self.update_steps() if s > step]
        if not upcoming or upcoming[0] - step > self.q:
            return  # only the last q batches before an update enter the rescale
        p_now, p_nxt = self.p_at(step), self.p_next(step)
        sums = torch.stack([_sum_pow(acts, p_now), _sum_pow(acts, p_nxt)])
        if reduce is not None:
            sums = reduce(sums)
        self.history.append((float(sums[0]), float(sums[1])))

    def state_dict(self) -> dict:
        return {"lam": self.lam, "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.lam = float(state["lam"])
        self.history = deque((tuple(h) for h in state["history"]), maxlen=self.q)


def _sum_pow(a: Tensor, p: float) -> Tensor:
    a = a.detach().double()
    pos = a > 0
    return a[pos].pow(p).sum()
