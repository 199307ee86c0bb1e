"""2-D feature geometry (m = 2) and the arrangement label used by ``intro`` (spec §4, §5.1).

Labels: ``none`` (nothing represented), ``single``, ``orthogonal`` (two features 90 deg apart), ``antipodal``
(represented features form antipodal pairs, possibly with features orthogonal to them), ``triangle``,
``pentagon`` (five features, every gap 72 +- 6 deg), ``other``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignlab.errors import AlignlabError
from alignlab.superposition.metrics import REPRESENTED_NORM

ANTIPODAL_TOL_DEG = 5.0
"""Antipodal pair: angle 180 +- 5 deg, both represented (spec §4)."""
ORTHOGONAL_TOL_DEG = 5.0
"""Orthogonal: angle 90 +- 5 deg (spec §9, intro dense level)."""
POLYGON_TOL_DEG = 6.0
"""Regular polygon: every gap 360/k +- 6 deg (spec §9 uses 72 +- 6 for the pentagon)."""


@dataclass(frozen=True)
class Geometry2D:
    """Geometry of one m = 2 instance."""

    represented: list[int]
    """Indices of represented features (||W_i|| > 0.5), sorted by angle."""
    angles_deg: list[float]
    """Angle in [0, 360) of each represented feature, same order."""
    gaps_deg: list[float]
    """Sorted (descending) gaps between consecutive represented angles, summing to 360."""
    norms: list[float]
    """||W_i|| for every feature."""
    biases: list[float]
    """b_i for every feature."""
    antipodal_pairs: list[tuple[int, int]]
    arrangement: str
    detail: str
    """Finer description, e.g. 'antipodal pair + 1 orthogonal'."""


def _angle_between(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def _antipodal_pairs(idx: list[int], ang: dict[int, float]) -> list[tuple[int, int]]:
    """Greedy matching of features whose angle differs by 180 +- tol (closest first)."""
    cands = sorted(
        (abs(_angle_between(ang[i], ang[j]) - 180.0), i, j)
        for k, i in enumerate(idx)
        for j in idx[k + 1 :]
        if abs(_angle_between(ang[i], ang[j]) - 180.0) <= ANTIPODAL_TOL_DEG
    )
    used: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for _, i, j in cands:
        if i not in used and j not in used:
            pairs.append((min(i, j), max(i, j)))
            used.update((i, j))
    return sorted(pairs)


def _classify(idx: list[int], ang: dict[int, float], gaps: list[float],
              pairs: list[tuple[int, int]]) -> tuple[str, str]:
    k = len(idx)
    if k == 0:
        return "none", "no feature represented"
    if k == 1:
        return "single", "one feature represented"
    regular = all(abs(g - 360.0 / k) <= POLYGON_TOL_DEG for g in gaps)
    if k == 5 and regular:
        return "pentagon", "five features, gaps 72 deg"
    if k == 2 and abs(_angle_between(ang[idx[0]], ang[idx[1]]) - 90.0) <= ORTHOGONAL_TOL_DEG:
        return "orthogonal", "two features at 90 deg"
    if pairs:
        paired = {i for p in pairs for i in p}
        rest = [i for i in idx if i not in paired]
        ortho = all(
            any(abs(_angle_between(ang[r], ang[p]) - 90.0) <= ORTHOGONAL_TOL_DEG for p in paired) for r in rest
        )
        if ortho:
            plural = "pair" if len(pairs) == 1 else "pairs"
            extra = f" + {len(rest)} orthogonal" if rest else ""
            return "antipodal", f"{len(pairs)} antipodal {plural}{extra}"
    if k == 3 and regular:
        return "triangle", "three features, gaps 120 deg"
    return "other", f"{k} features, gaps " + "/".join(f"{g:.0f}" for g in gaps)


def geometry_2d(W: np.ndarray, b: np.ndarray, threshold: float = REPRESENTED_NORM) -> Geometry2D:
    """Angles, gaps, antipodal pairs and an arrangement label for one instance. W [n, 2], b [n]."""
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if W.ndim != 2 or W.shape[1] != 2 or b.shape != (W.shape[0],):
        raise AlignlabError(f"geometry_2d needs W [n, 2] and b [n] (got {W.shape}, {b.shape}); use an m = 2 model")
    norms = np.linalg.norm(W, axis=1)
    ang_all = np.degrees(np.arctan2(W[:, 1], W[:, 0])) % 360.0
    idx = sorted((int(i) for i in np.flatnonzero(norms > threshold)), key=lambda i: ang_all[i])
    ang = {i: float(ang_all[i]) for i in idx}
    sorted_angles = [ang[i] for i in idx]
    if len(idx) >= 2:
        gaps = [(sorted_angles[(k + 1) % len(idx)] - sorted_angles[k]) % 360.0 for k in range(len(idx))]
    else:
        gaps = [360.0] if idx else []
    gaps = sorted(gaps, reverse=True)
    pairs = _antipodal_pairs(idx, ang)
    arrangement, detail = _classify(idx, ang, gaps, pairs)
    return Geometry2D(
        represented=idx,
        angles_deg=[round(a, 6) for a in sorted_angles],
        gaps_deg=[round(g, 6) for g in gaps],
        norms=[float(v) for v in norms],
        biases=[float(v) for v in b],
        antipodal_pairs=pairs,
        arrangement=arrangement,
        detail=detail,
    )
