"""Per-instance TMS metrics in float64 (Elhage et al. 2022, "Feature Dimensionality" section; spec §4).

Every function takes W [L, n, m] (or [n, m] for one instance) and returns numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignlab.errors import AlignlabError

REPRESENTED_NORM = 0.5
"""A feature is represented when ||W_i|| > 0.5 (project threshold, spec §4)."""
NORM_CLAMP = 1e-6
"""Norm clamp for W_i / ||W_i||, as in the reference notebook."""

NAMED_FRACTIONS: dict[str, float] = {
    "1": 1.0,
    "3/4": 3 / 4,  # tetrahedron
    "2/3": 2 / 3,  # triangle
    "1/2": 1 / 2,  # antipodal pair
    "2/5": 2 / 5,  # pentagon
    "3/8": 3 / 8,  # square antiprism
}
STICKY_FRACTIONS: tuple[str, ...] = ("2/3", "1/2", "2/5", "3/8")


def as_instances(W: np.ndarray) -> np.ndarray:
    """Validate and return W as float64 [L, n, m]."""
    arr = np.asarray(W, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise AlignlabError(f"W must have shape [L, n, m] or [n, m] (got {tuple(np.shape(W))}); pass feature rows")
    if not np.all(np.isfinite(arr)):
        raise AlignlabError("W contains NaN or inf; retrain with a smaller learning rate")
    return arr


def feature_norms(W: np.ndarray) -> np.ndarray:
    """||W_i|| per feature. Returns [L, n]."""
    return np.linalg.norm(as_instances(W), axis=-1)


def represented(W: np.ndarray, threshold: float = REPRESENTED_NORM) -> np.ndarray:
    """Boolean [L, n]: ||W_i|| > threshold."""
    return feature_norms(W) > threshold


def _overlaps(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(norms [L, n], squared overlaps (W_hat_i . W_j)^2 [L, n, n])."""
    W = as_instances(W)
    norms = np.linalg.norm(W, axis=-1)  # [L, n]
    W_hat = W / np.maximum(norms, NORM_CLAMP)[..., None]  # [L, n, m]
    dots = np.einsum("lim,ljm->lij", W_hat, W)  # [L, n, n]
    return norms, dots**2


def interference(W: np.ndarray) -> np.ndarray:
    """phi_i = sum_{j != i} (W_hat_i . W_j)^2 (superposition score). Returns [L, n]."""
    _, sq = _overlaps(W)
    return sq.sum(-1) - np.einsum("lii->li", sq)


def dimensionality(W: np.ndarray) -> np.ndarray:
    """D_i = ||W_i||^2 / sum_j (W_hat_i . W_j)^2. Returns [L, n] (0 for a dropped feature)."""
    norms, sq = _overlaps(W)
    return norms**2 / np.maximum(sq.sum(-1), NORM_CLAMP**2)


def dims_per_feature(W: np.ndarray) -> np.ndarray:
    """D* = m / ||W||_F^2. Returns [L]."""
    W = as_instances(W)
    return W.shape[2] / np.maximum((W**2).sum(axis=(1, 2)), NORM_CLAMP)


@dataclass(frozen=True)
class LineTest:
    """Spec §4 line test for one fraction at one sparsity level."""

    fraction: float
    centre: int
    """Features with D_i >= 0.1 and |D_i - f| <= 0.005."""
    flank: int
    """The larger count of the two equal-width windows centred at f +- 0.0125."""
    qualifies: bool
    """Only levels with D* < 0.95 qualify."""
    present: bool


def line_test(D: np.ndarray, d_star: float, fraction: float, half_width: float = 0.005,
              flank_offset: float = 0.0125, min_centre: int = 10) -> LineTest:
    """Is there a line (cluster) of features at ``fraction``? D is one level's D_i [n]."""
    D = np.asarray(D, dtype=np.float64)
    D = D[D >= 0.1]

    def count(centre: float) -> int:
        return int(np.sum(np.abs(D - centre) <= half_width))

    centre = count(fraction)
    flank = max(count(fraction - flank_offset), count(fraction + flank_offset))
    qualifies = bool(d_star < 0.95)
    present = qualifies and centre >= min_centre and centre >= 2 * flank
    return LineTest(fraction=fraction, centre=centre, flank=flank, qualifies=qualifies, present=bool(present))


def cluster_counts(D: np.ndarray, tol: float = 0.02) -> dict[str, int]:
    """Features (D_i >= 0.1) within ``tol`` of each named fraction below 1 (spec §5.2 table)."""
    D = np.asarray(D, dtype=np.float64)
    D = D[D >= 0.1]
    return {name: int(np.sum(np.abs(D - f) <= tol)) for name, f in NAMED_FRACTIONS.items() if f < 1}
