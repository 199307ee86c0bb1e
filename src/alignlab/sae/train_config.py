"""Optimisation settings shared by every SAE trained from one activation stream (spec §4)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from alignlab.errors import AlignlabError
from alignlab.sae.schedules import LR_SCHEDULES


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every SAE trained from one activation stream."""

    total_steps: int = 1000
    """Optimiser steps (schedules are functions of the step)."""
    batch_size: int = 4096
    """Tokens (activation rows) per step; the iterator must yield [batch_size, d_in] batches."""
    lr: float | None = None
    """Adam learning rate (None: 2e-4/sqrt(n/2^14) for the TopK family, 3e-4 otherwise)."""
    lr_warmup_steps: int = 1000
    """Linear LR warm-up steps."""
    lr_schedule: str = "constant"
    """constant | cosine | linear_decay_tail (after warm-up)."""
    lr_decay_steps: int = 0
    """linear_decay_tail: decay over the final N steps (0: use lr_decay_frac)."""
    lr_decay_frac: float = 0.0
    """linear_decay_tail: decay over this fraction of the run when lr_decay_steps is 0 (April recipe: 0.2)."""
    lr_end_frac: float = 0.0
    """LR at the end of a decay, as a fraction of the base LR."""
    l1_warmup_steps: int = 0
    """Linear lambda warm-up steps from 0 (Gated presets: 2000)."""
    l1_warmup_frac: float = 0.0
    """Lambda warm-up as a fraction of the run when l1_warmup_steps is 0 (April: 0.05, jumprelu_tanh: 1.0)."""
    adam_betas: tuple[float, float] = (0.0, 0.999)
    """Adam (beta1, beta2); the Gated paper and Bricken use (0, 0.999)."""
    adam_eps: float = 1e-8
    """Adam epsilon (TopK: 6.25e-10, Gao et al. 2024)."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0 disables)."""
    seed: int = 0
    """Seed of the trainer's own randomness (resampling draws)."""
    checkpoint_every: int = 0
    """Write a checkpoint every N steps (0: only at the end; needs out_dir)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (oldest pruned)."""
    log_every: int = 50
    """Steps between JSONL log records / progress-bar updates."""
    dead_window: int = 10_000_000
    """Tokens without firing after which a latent counts as dead (AuxK, logs)."""
    dense_threshold: float = 0.1
    """Firing frequency above which a latent counts as dense (the 0.01 rate is logged too)."""
    resample: bool = True
    """Resample dead latents at resample_steps for SAEs whose recipe uses resampling."""
    resample_steps: tuple[int, ...] = (25_000, 50_000, 75_000, 100_000)
    """Steps at which dead latents are resampled (Bricken et al. 2023)."""
    resample_ramp: int = 1000
    """Steps of the cosine LR ramp back to 1x after a resample."""
    norm_estimate_batches: int = 100
    """Batches consumed up front to estimate the input scale when an SAE normalises activations."""
    device: str = "auto"
    """cpu | cuda | cuda:N | auto (cuda when available)."""
    autocast_bf16: bool = False
    """Run SAE matmuls under bf16 autocast (master weights stay fp32; no GradScaler)."""
    compile_kernels: bool = True
    """torch.compile the gated SAE's elementwise kernels on CUDA (Triton; eager if compiling fails; no-op on CPU)."""

    def __post_init__(self) -> None:
        if self.total_steps < 1 or self.batch_size < 1:
            raise AlignlabError(f"total_steps and batch_size must be >= 1 (got {self.total_steps}, {self.batch_size})")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise AlignlabError(f"lr must be a positive number, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise AlignlabError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise AlignlabError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if self.grad_clip < 0 or self.dead_window < 1 or self.log_every < 1:
            raise AlignlabError("grad_clip must be >= 0 and dead_window, log_every >= 1")
        if not (0.0 <= self.lr_decay_frac <= 1.0 and 0.0 <= self.l1_warmup_frac <= 1.0):
            raise AlignlabError("lr_decay_frac and l1_warmup_frac must be in [0, 1]")

    @property
    def l1_warmup(self) -> int:
        return self.l1_warmup_steps or int(round(self.l1_warmup_frac * self.total_steps))

    @property
    def lr_decay(self) -> int:
        return self.lr_decay_steps or int(round(self.lr_decay_frac * self.total_steps))


TOPK_FAMILY = ("topk", "batchtopk", "matryoshka")


STREAM_FIELDS = ("total_steps", "batch_size", "device", "log_every", "checkpoint_every", "keep_checkpoints",
                 "norm_estimate_batches", "autocast_bf16", "compile_kernels")
"""TrainConfig fields of the shared activation stream; every other field may differ per SAE."""


def slot_config(cfg: TrainConfig, overrides: dict[str, Any] | None) -> TrainConfig:
    """``cfg`` with one SAE's own optimiser and schedule fields (validated; stream fields may not differ)."""
    if not overrides:
        return cfg
    shared = sorted(k for k in overrides if k in STREAM_FIELDS and overrides[k] != getattr(cfg, k))
    if shared:
        raise AlignlabError(f"{', '.join(shared)} belong to the shared activation stream and cannot differ per SAE")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise AlignlabError(f"unknown TrainConfig fields {unknown}")
    return dataclasses.replace(cfg, **overrides)
