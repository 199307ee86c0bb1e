"""The common polysemanticity metric of spec §6.2 (response matrix, active concepts, no-superposition guard)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alignlab.errors import AlignlabError

ACTIVE_TAU = 0.5
"""Neuron j is active on concept k when R_jk > 0 and R_jk >= tau * max_k R_jk (spec §6.2)."""


def response_matrix(acts_by_concept: list[np.ndarray], baseline: np.ndarray) -> np.ndarray:
    """R_jk = E[h_j | probes of c_k] - baseline_j. Each entry of ``acts_by_concept`` is [probes, m]; returns [m, K]."""
    if not acts_by_concept:
        raise AlignlabError("no concepts given; pass at least one probe set")
    means = []
    for k, acts in enumerate(acts_by_concept):
        arr = np.asarray(acts, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0 or not np.all(np.isfinite(arr)):
            raise AlignlabError(f"concept {k}: probe activations must be a finite, non-empty [probes, m] array")
        means.append(arr.mean(axis=0))
    return (np.stack(means, axis=1) - np.asarray(baseline, dtype=np.float64)[:, None])  # [m, K]


def active_concepts(R: np.ndarray, tau: float = ACTIVE_TAU, absolute: bool = False) -> np.ndarray:
    """Boolean [m, K]. ``absolute`` uses |R| (sign-agnostic variant for unprivileged bases)."""
    R = np.abs(R) if absolute else np.asarray(R, dtype=np.float64)
    top = R.max(axis=1, keepdims=True)
    return (R > 0) & (tau * top <= R)


def count_runs(active_row: np.ndarray) -> int:
    """Number of separate runs of True with circular adjacency (ordered concepts such as value bins)."""
    row = np.asarray(active_row, dtype=bool)
    if row.all():
        return 1
    if not row.any():
        return 0
    # A run starts where row[k] is True and row[k-1] is False (k-1 taken circularly).
    return int(np.sum(row & ~np.roll(row, 1)))


def concepts_per_neuron(active: np.ndarray, ordered: bool = False) -> list[int]:
    """Active concepts per neuron; for ordered concepts, the number of separate active runs."""
    if ordered:
        return [count_runs(row) for row in active]
    return [int(v) for v in active.sum(axis=1)]


@dataclass(frozen=True)
class Guard:
    """Spec §6.2 no-superposition guard: (a) features <= neurons, (b) orthogonal linear features, (c) exact decoding."""

    n_features: int
    n_neurons: int
    max_abs_cos: float | None
    """Largest |cos| between distinct linear feature directions (None: features are not directions)."""
    dims: list[float] | None
    """D_i of each linear feature (None: not linear)."""
    decode_error: float

    @property
    def holds(self) -> bool:
        linear_ok = self.max_abs_cos is None or (
            self.max_abs_cos <= 1e-9 and self.dims is not None and all(abs(d - 1) <= 1e-9 for d in self.dims)
        )
        return self.n_features <= self.n_neurons and linear_ok and self.decode_error <= 1e-9


@dataclass(frozen=True)
class PolyReport:
    """What every polysemanticity case reports."""

    name: str
    concepts: list[str]
    R: np.ndarray
    """[neurons, concepts] response matrix."""
    active: np.ndarray
    concepts_per_neuron: list[int]
    guard: Guard
    extra: dict = field(default_factory=dict)

    @property
    def poly_frac(self) -> float:
        return float(np.mean([c >= 2 for c in self.concepts_per_neuron]))

    def to_json(self) -> dict:
        g = self.guard
        return {
            "name": self.name, "concepts": self.concepts, "R": self.R.tolist(), "active": self.active.tolist(),
            "concepts_per_neuron": self.concepts_per_neuron, "poly_frac": self.poly_frac,
            "guard": {"n_features": g.n_features, "n_neurons": g.n_neurons, "max_abs_cos": g.max_abs_cos,
                      "dims": g.dims, "decode_error": g.decode_error, "holds": g.holds},
            **self.extra,
        }


def linear_guard_terms(F: np.ndarray) -> tuple[float, list[float]]:
    """(max |cos| between distinct rows, D_i per row) for feature directions F [n_features, m]."""
    from alignlab.superposition.metrics import dimensionality

    F = np.asarray(F, dtype=np.float64)
    unit = F / np.linalg.norm(F, axis=1, keepdims=True)
    cos = unit @ unit.T
    off = np.abs(cos - np.diag(np.diag(cos)))
    return float(off.max()) if len(F) > 1 else 0.0, [float(v) for v in dimensionality(F)[0]]
