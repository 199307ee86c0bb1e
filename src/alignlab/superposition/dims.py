"""Feature dimensionality across sparsity: the 200-in-20 geometry grid and the 100-in-20 features grid
(Elhage et al. 2022, "Feature Dimensionality" and "Superposition as a Phase Change"; spec §5.2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignlab.superposition.config import TMSConfig
from alignlab.superposition.metrics import (
    NAMED_FRACTIONS,
    STICKY_FRACTIONS,
    LineTest,
    cluster_counts,
    dimensionality,
    dims_per_feature,
    feature_norms,
    interference,
    line_test,
    represented,
)
from alignlab.superposition.runs import GridRun, train_with_restarts


@dataclass(frozen=True)
class DimsLevel:
    """One sparsity level."""

    feature_prob: float
    inv_density: float
    """1 / (1 - S)."""
    d_star: float
    n_represented: int
    n_dims_above_0_1: int
    """Features with D_i > 0.1."""
    clusters: dict[str, int]
    """Features within 0.02 of each named fraction (D_i >= 0.1)."""
    lines: dict[str, LineTest]
    """Spec §4 line test at each sticky fraction."""
    dims: list[float]
    norms: list[float]
    interference: list[float]


@dataclass(frozen=True)
class DimsResult:
    config: TMSConfig
    run: GridRun
    levels: list[DimsLevel]


def analyse_dims(cfg: TMSConfig, W: np.ndarray) -> list[DimsLevel]:
    """Per-level dimensionality metrics of a trained grid. W [L, n, m]."""
    D = dimensionality(W)
    d_star = dims_per_feature(W)
    norms = feature_norms(W)
    phi = interference(W)
    rep = represented(W)
    levels = []
    for k in range(cfg.L):
        p = float(cfg.feature_prob[k])
        levels.append(DimsLevel(
            feature_prob=p, inv_density=1.0 / p, d_star=float(d_star[k]), n_represented=int(rep[k].sum()),
            n_dims_above_0_1=int(np.sum(D[k] > 0.1)), clusters=cluster_counts(D[k]),
            lines={name: line_test(D[k], float(d_star[k]), NAMED_FRACTIONS[name]) for name in STICKY_FRACTIONS},
            dims=[float(v) for v in D[k]], norms=[float(v) for v in norms[k]], interference=[float(v) for v in phi[k]],
        ))
    return levels


def run_dims(cfg: TMSConfig, restarts: int = 1, backend: str = "torch", progress: bool | None = None) -> DimsResult:
    run = train_with_restarts(cfg, restarts=restarts, backend=backend, progress=progress)
    return DimsResult(config=cfg, run=run, levels=analyse_dims(cfg, run.W))


def dims_table(levels: list[DimsLevel]) -> str:
    """Text table shaped like spec §5.2."""
    head = f"{'1/(1-S)':>8} {'D*':>6} {'repr':>4} {'D>0.1':>5}  clusters (+-0.02)            lines"
    lines = [head]
    for lv in levels:
        clusters = ", ".join(f"{c} at {name}" for name, c in lv.clusters.items() if c) or "none"
        present = ", ".join(name for name, t in lv.lines.items() if t.present) or "-"
        lines.append(f"{lv.inv_density:8.2f} {lv.d_star:6.3f} {lv.n_represented:4d} {lv.n_dims_above_0_1:5d}  "
                     f"{clusters:<28}  {present}")
    return "\n".join(lines)


def dims_json(levels: list[DimsLevel]) -> list[dict]:
    return [{
        "feature_prob": lv.feature_prob, "inv_density": lv.inv_density, "d_star": lv.d_star,
        "n_represented": lv.n_represented, "n_dims_above_0_1": lv.n_dims_above_0_1, "clusters": lv.clusters,
        "lines": {name: {"centre": t.centre, "flank": t.flank, "qualifies": t.qualifies, "present": t.present}
                  for name, t in lv.lines.items()},
        "dims": lv.dims, "norms": lv.norms, "interference": lv.interference,
    } for lv in levels]


def plateau_run(levels: list[DimsLevel], lo: float = 0.48, hi: float = 0.55, x_lo: float = 2.0,
                x_hi: float = 4.0) -> int:
    """Longest run of consecutive levels with D* in [lo, hi] among levels with 1/(1-S) in [x_lo, x_hi]."""
    best = cur = 0
    for lv in levels:
        if x_lo <= lv.inv_density <= x_hi and lo <= lv.d_star <= hi:
            cur += 1
            best = max(best, cur)
        else:
            cur = 0
    return best
