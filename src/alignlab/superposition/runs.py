"""Backend dispatch and best-of-k restarts shared by the TMS experiments.

Each geometry is a local optimum (spec §5.1), so ``restarts > 1`` trains the whole grid again from fresh seeds and
keeps, per instance, the model with the lowest held-out loss. Restart k uses seed ``seed + 10_000 * k``; with
``restarts=1`` the run is exactly the single faithful notebook run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from alignlab.errors import AlignlabError
from alignlab.superposition.config import BACKENDS, TMSConfig
from alignlab.superposition.tms import TrainResult, eval_losses

RESTART_SEED_STRIDE = 10_000


@dataclass(frozen=True)
class GridRun:
    """The kept model per instance plus what the restarts looked like."""

    W: np.ndarray
    """[L, n, m] kept weights."""
    b: np.ndarray
    """[L, n] kept biases."""
    loss_history: np.ndarray
    """[n_logs, L] training loss of the kept restart of each instance."""
    held_out_loss: np.ndarray
    """[restarts, L] held-out loss of every restart."""
    chosen: np.ndarray
    """[L] index of the kept restart."""
    restart_seeds: list[int]


def train(cfg: TMSConfig, backend: str = "torch", progress: bool | None = None) -> TrainResult:
    """Train one grid with the chosen backend."""
    if backend not in BACKENDS:
        raise AlignlabError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "numpy":
        from alignlab.superposition.numpy_backend import train_numpy

        return train_numpy(cfg)
    import torch

    from alignlab.superposition.tms import train_torch

    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # spec §8; restored so other code in the process is unaffected
    try:
        return train_torch(cfg, progress=progress)
    finally:
        torch.use_deterministic_algorithms(previous)


def train_with_restarts(cfg: TMSConfig, restarts: int = 1, backend: str = "torch",
                        progress: bool | None = None) -> GridRun:
    """Train ``restarts`` copies of the grid and keep the lowest held-out loss per instance."""
    if restarts < 1:
        raise AlignlabError(f"restarts must be >= 1 (got {restarts})")
    seeds = [cfg.seed + RESTART_SEED_STRIDE * k for k in range(restarts)]
    results = [train(dataclasses.replace(cfg, seed=s), backend, progress) for s in seeds]
    held = np.stack([eval_losses(cfg, r.W, r.b) for r in results])  # [restarts, L]
    chosen = np.argmin(held, axis=0)  # first minimum on ties
    pick = np.arange(cfg.L)
    W = np.stack([r.W for r in results])[chosen, pick]
    b = np.stack([r.b for r in results])[chosen, pick]
    hist = np.stack([r.loss_history for r in results])[chosen, :, pick].T  # [n_logs, L]
    return GridRun(W=W, b=b, loss_history=hist, held_out_loss=held, chosen=chosen, restart_seeds=seeds)
