"""Configuration of a batch of Toy-Models-of-Superposition instances (spec §3, §8).

One ``TMSConfig`` describes L instances trained together; they share nothing but the summed loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from alignlab.errors import AlignlabError

PRESETS: tuple[str, ...] = ("tms-notebook", "arena-v3")
BACKENDS: tuple[str, ...] = ("torch", "numpy")


@dataclass(frozen=True)
class TMSConfig:
    """L toy models x' = ReLU(W^T W x + b) with n features squeezed into m hidden dimensions."""

    n: int
    """Number of input features."""
    m: int
    """Number of hidden dimensions."""
    L: int
    """Number of instances trained at once (leading batch dimension of W)."""
    importance: tuple[float, ...]
    """Feature importance I_i: n values shared by all instances, or L*n values (instance-major)."""
    feature_prob: tuple[float, ...]
    """Feature probability p = 1 - S, one value per instance (length L)."""
    steps: int = 10_000
    """Optimiser steps (reference notebook: 10 000)."""
    batch: int = 1024
    """Fresh examples per step and instance (reference notebook: 1024)."""
    lr: float = 1e-3
    """Peak learning rate (reference notebook: 1e-3)."""
    optimizer: Literal["adamw", "adam"] = "adamw"
    """adamw (reference notebook, torch defaults) or adam (ARENA 3.0, no weight decay)."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay (torch default 0.01); ignored by adam."""
    seed: int = 0
    """One seed drives initialisation and data."""
    preset: str | None = None
    """Name of the preset these settings come from (recorded in every result file)."""
    init: Literal["xavier", "per_instance"] = "xavier"
    """xavier: torch xavier_normal_ on the 3-D W (std depends on L, as in the notebook); per_instance: std sqrt(2/(n+m))."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """constant (notebook default); linear decay to 0 and half-cosine are this project's own choices."""
    linear: bool = False
    """Drop the output ReLU (linear baseline)."""
    signed: bool = False
    """Signed inputs u ~ U[-1, 1] (ARENA abs-value variant) instead of U[0, 1)."""
    log_every: int = 100
    """Record the per-instance loss every this many steps."""

    def __post_init__(self) -> None:
        for name in ("n", "m", "L", "steps", "batch", "log_every"):
            if int(getattr(self, name)) < 1:
                raise AlignlabError(f"TMSConfig.{name} must be >= 1 (got {getattr(self, name)}); pass a positive value")
        if len(self.importance) not in (self.n, self.n * self.L):
            raise AlignlabError(
                f"importance has {len(self.importance)} values; give n={self.n} or L*n={self.n * self.L} values"
            )
        if len(self.feature_prob) != self.L:
            raise AlignlabError(f"feature_prob has {len(self.feature_prob)} values; give one per instance (L={self.L})")
        if any(not math.isfinite(v) or v < 0 for v in self.importance):
            raise AlignlabError("importance values must be finite and >= 0; fix the importance schedule")
        if any(not math.isfinite(p) or not 0.0 < p <= 1.0 for p in self.feature_prob):
            raise AlignlabError("feature_prob values must lie in (0, 1]; fix the sparsity schedule")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise AlignlabError(f"lr must be a positive finite number (got {self.lr})")
        if self.weight_decay < 0 or not math.isfinite(self.weight_decay):
            raise AlignlabError(f"weight_decay must be >= 0 (got {self.weight_decay})")
        if self.optimizer not in ("adamw", "adam"):
            raise AlignlabError(f"optimizer must be adamw or adam (got {self.optimizer!r})")
        if self.init not in ("xavier", "per_instance"):
            raise AlignlabError(f"init must be xavier or per_instance (got {self.init!r})")
        if self.lr_schedule not in ("constant", "linear", "cosine"):
            raise AlignlabError(f"lr_schedule must be constant, linear or cosine (got {self.lr_schedule!r})")
        if self.preset is not None and self.preset not in PRESETS:
            raise AlignlabError(f"unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}")

    def importance_rows(self) -> list[list[float]]:
        """Importance as L rows of n values."""
        vals = list(self.importance)
        if len(vals) == self.n:
            return [vals[:] for _ in range(self.L)]
        return [vals[i * self.n : (i + 1) * self.n] for i in range(self.L)]

    def init_std(self) -> float:
        """Std of the initial W (spec §3.1): torch xavier fan rule on [L, n, m] or per-instance."""
        if self.init == "per_instance":
            return math.sqrt(2.0 / (self.n + self.m))
        # torch fan rule for a 3-D tensor [L, n, m]: fan_in = n*m, fan_out = L*m.
        return math.sqrt(2.0 / (self.n * self.m + self.L * self.m))

    def lr_at(self, step: int) -> float:
        """Learning rate at ``step`` (0-based)."""
        frac = step / self.steps
        if self.lr_schedule == "linear":
            return self.lr * (1.0 - frac)
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
        return self.lr

    @property
    def effective_weight_decay(self) -> float:
        return self.weight_decay if self.optimizer == "adamw" else 0.0


@dataclass(frozen=True)
class RunOptions:
    """Command-line options shared by intro | features | dims | phase (None keeps the preset's value)."""

    preset: Literal["tms-notebook", "arena-v3"] = "tms-notebook"
    """Training defaults: tms-notebook (AdamW, reference notebook) or arena-v3 (Adam, ARENA 3.0)."""
    seed: int = 0
    """Seed for initialisation and data (restart k uses seed + 10000 k)."""
    steps: int | None = None
    """Optimiser steps (preset default 10 000); lower it for a quick look."""
    batch: int | None = None
    """Examples per step and instance (preset default 1024)."""
    lr: float | None = None
    """Learning rate (preset default 1e-3)."""
    lr_schedule: Literal["constant", "linear", "cosine"] | None = None
    """constant (notebook), or this project's linear / half-cosine decay."""
    restarts: int | None = None
    """Train the grid this many times and keep the lowest held-out loss per instance (intro default 4, phase 3, else 1)."""
    linear: bool = False
    """Drop the output ReLU (linear baseline)."""
    signed: bool = False
    """Signed inputs u ~ U[-1, 1] (ARENA abs-value variant)."""
    init: Literal["xavier", "per_instance"] | None = None
    """xavier (notebook, std depends on L) or per_instance (std sqrt(2/(n+m))); default: the experiment's."""
    backend: Literal["torch", "numpy"] = "torch"
    """torch (default) or numpy (reference port, for parity checks; slow)."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "restarts", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise AlignlabError(f"--{name} must be >= 1 (got {value})")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise AlignlabError(f"--lr must be a positive number (got {self.lr})")
        if self.backend not in BACKENDS:
            raise AlignlabError(f"--backend must be one of {', '.join(BACKENDS)} (got {self.backend!r})")
        if self.preset not in PRESETS:
            raise AlignlabError(f"--preset must be one of {', '.join(PRESETS)} (got {self.preset!r})")
