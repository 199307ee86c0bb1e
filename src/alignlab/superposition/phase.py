"""Sparsity x importance phase diagram: two features into one dimension (spec §5.3, project configuration).

Instance k = (ratio index k // n_probs, prob index k % n_probs); I = (1, r).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignlab.superposition.config import TMSConfig
from alignlab.superposition.metrics import REPRESENTED_NORM, feature_norms
from alignlab.superposition.runs import GridRun, train_with_restarts

CLASSES: tuple[str, ...] = ("feature 2 dropped", "feature 1 dropped", "none", "superposition")


@dataclass(frozen=True)
class PhaseCell:
    feature_prob: float
    ratio: float
    """r = I_2 / I_1."""
    norm_1: float
    norm_2: float
    dot: float
    """W_1 . W_2 (negative: antipodal)."""
    phase: str


@dataclass(frozen=True)
class PhaseResult:
    config: TMSConfig
    run: GridRun
    cells: list[PhaseCell]


def classify(norm_1: float, norm_2: float, threshold: float = REPRESENTED_NORM) -> str:
    """Spec §5.3 classes from the two feature norms."""
    rep_1, rep_2 = norm_1 > threshold, norm_2 > threshold
    if rep_1 and rep_2:
        return "superposition"
    if rep_1:
        return "feature 2 dropped"
    if rep_2:
        return "feature 1 dropped"
    return "none"


def analyse_phase(cfg: TMSConfig, W: np.ndarray) -> list[PhaseCell]:
    """Classify every instance of an n = 2 grid. W [L, 2, m]."""
    norms = feature_norms(W)  # [L, 2]
    dots = np.einsum("lm,lm->l", W[:, 0], W[:, 1])
    rows = cfg.importance_rows()
    return [PhaseCell(feature_prob=float(cfg.feature_prob[k]), ratio=float(rows[k][1] / rows[k][0]),
                      norm_1=float(norms[k, 0]), norm_2=float(norms[k, 1]), dot=float(dots[k]),
                      phase=classify(float(norms[k, 0]), float(norms[k, 1])))
            for k in range(cfg.L)]


def run_phase(cfg: TMSConfig, restarts: int = 1, backend: str = "torch", progress: bool | None = None) -> PhaseResult:
    run = train_with_restarts(cfg, restarts=restarts, backend=backend, progress=progress)
    return PhaseResult(config=cfg, run=run, cells=analyse_phase(cfg, run.W))


def find_cell(cells: list[PhaseCell], feature_prob: float, ratio: float) -> PhaseCell:
    """The cell nearest (in log space) to (feature_prob, ratio)."""
    return min(cells, key=lambda c: abs(np.log(c.feature_prob / feature_prob)) + abs(np.log(c.ratio / ratio)))


SYMBOLS = {"feature 2 dropped": "1", "feature 1 dropped": "2", "none": ".", "superposition": "S"}


def phase_table(cells: list[PhaseCell]) -> str:
    """Grid of class symbols: rows r (descending), columns 1-S ascending. S* = superposition, antipodal."""
    probs = sorted({c.feature_prob for c in cells})
    ratios = sorted({c.ratio for c in cells}, reverse=True)
    lookup = {(c.feature_prob, c.ratio): c for c in cells}
    lines = ["r \\ 1-S " + " ".join(f"{p:6.3f}" for p in probs)]
    for r in ratios:
        row = []
        for p in probs:
            c = lookup.get((p, r))
            if c is None:  # a partial grid (select_instances)
                row.append(f"{'':>6}")
                continue
            sym = SYMBOLS[c.phase] + ("*" if c.phase == "superposition" and c.dot < 0 else "")
            row.append(f"{sym:>6}")
        lines.append(f"{r:8.3f} " + " ".join(row))
    lines.append("1: only feature 1 kept, 2: only feature 2 kept, S: both (superposition; * antipodal), .: none")
    return "\n".join(lines)
