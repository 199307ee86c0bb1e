"""Scaling-law parameter sets, their per-draw noise, and compute-optimal allocation (spec §3.1, §4, §5).

KL(N, D) = A/N^alpha + B/D^beta is the reducible loss, read as per-token KL in nats (E dropped).
Compute-optimal allocation (Hoffmann et al. 2022): C = 6ND, N_opt = G (C/6)^(beta/(alpha+beta)),
D_opt = G^-1 (C/6)^(alpha/(alpha+beta)).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from alignlab.errors import AlignlabError

GFormula = Literal["hoffmann", "reference", "no-exponent"]
G_FORMULAS: tuple[str, ...] = ("hoffmann", "reference", "no-exponent")


@dataclass(frozen=True)
class ScalingLaw:
    """One parametric scaling law L(N, D) = E + A/N^alpha + B/D^beta with its per-draw noise (spec §4)."""

    name: str
    """Label recorded in every output."""
    A: float
    """Parameter-term coefficient."""
    B: float
    """Data-term coefficient."""
    alpha: float
    """Parameter exponent."""
    beta: float
    """Data exponent."""
    E: float | None = None
    """Irreducible loss (nats/token); None where the spec marks it not established. KL never uses it."""
    sd_A: float = 25.0
    """Per-draw noise: A ~ N(A, sd_A) (reference `computation_for_k_performance`)."""
    sd_B: float = 25.0
    """Per-draw noise: B ~ N(B, sd_B)."""
    sd_alpha: float = 0.05
    """Per-draw noise: alpha ~ N(alpha, sd_alpha)."""
    sd_beta: float = 0.05
    """Per-draw noise: beta ~ N(beta, sd_beta)."""

    def __post_init__(self) -> None:
        for key in ("A", "B", "alpha", "beta", "sd_A", "sd_B", "sd_alpha", "sd_beta"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise AlignlabError(f"scaling law {self.name!r}: {key} must be a finite number, got {v!r}")
        if min(self.A, self.B, self.alpha, self.beta) <= 0:
            raise AlignlabError(f"scaling law {self.name!r}: A, B, alpha and beta must be positive")
        if min(self.sd_A, self.sd_B, self.sd_alpha, self.sd_beta) < 0:
            raise AlignlabError(f"scaling law {self.name!r}: noise standard deviations must be >= 0")
        if self.E is not None and not (isinstance(self.E, (int, float)) and math.isfinite(self.E)):
            raise AlignlabError(f"scaling law {self.name!r}: E must be a finite number or null")


# Hoffmann et al. 2022, Approach 3 (reference code 2023-02 to 2024-09). Some paraphrases quote A = 306;
# the code and the paper use 406.4.
HOFFMANN2022 = ScalingLaw("hoffmann2022", A=406.4, B=410.7, alpha=0.34, beta=0.28, E=1.69)
# Besiroglu et al. 2024 (arXiv:2404.10102), reference code since 01ffd90. E ~ 1.82 is NOT established.
BESIROGLU2024 = ScalingLaw("besiroglu2024", A=482.01, B=2085.43, alpha=0.3478, beta=0.3658, E=None)
PARAM_SETS: dict[str, ScalingLaw] = {law.name: law for law in (HOFFMANN2022, BESIROGLU2024)}


def load_scaling_law(spec: str) -> ScalingLaw:
    """A named set (hoffmann2022, besiroglu2024) or a JSON file with A, B, alpha, beta (optional E, sd_*)."""
    if spec in PARAM_SETS:
        return PARAM_SETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise AlignlabError(
            f"unknown parameter set {spec!r}; use one of {sorted(PARAM_SETS)} or a JSON file path"
        )
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AlignlabError(
            f"parameter file {path} is not valid JSON ({exc.__class__.__name__}); fix the file"
        ) from None
    allowed = {"name", "A", "B", "alpha", "beta", "E", "sd_A", "sd_B", "sd_alpha", "sd_beta"}
    if not isinstance(obj, dict) or not {"A", "B", "alpha", "beta"} <= set(obj) or set(obj) - allowed:
        raise AlignlabError(
            f"parameter file {path} needs keys A, B, alpha, beta (optional: E, sd_A, sd_B, "
            "sd_alpha, sd_beta, name) and no others"
        )
    obj.setdefault("name", path.stem)
    return ScalingLaw(**obj)


def law_to_dict(law: ScalingLaw) -> dict:
    return asdict(law)


@dataclass(frozen=True)
class LawDraws:
    """Scaling-law parameters, one entry per Monte-Carlo sample.  # each [n]"""

    A: np.ndarray
    B: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray


def central(law: ScalingLaw, n: int = 1) -> LawDraws:
    """The central parameters repeated ``n`` times (no noise)."""
    return LawDraws(np.full(n, law.A), np.full(n, law.B), np.full(n, law.alpha), np.full(n, law.beta))


def draw_noise(law: ScalingLaw, rng: np.random.Generator, n: int) -> LawDraws:
    """One noisy parameter draw per sample: A ~ N(A, 25), B ~ N(B, 25), alpha, beta ~ N(., 0.05) (spec §4)."""
    return LawDraws(
        A=rng.normal(law.A, law.sd_A, n),
        B=rng.normal(law.B, law.sd_B, n),
        alpha=rng.normal(law.alpha, law.sd_alpha, n),
        beta=rng.normal(law.beta, law.sd_beta, n),
    )


def g_constant(A, B, alpha, beta, formula: GFormula = "hoffmann"):
    """Allocation constant G (spec §5). Works on floats or arrays.

    hoffmann:     G = (alpha A / (beta B))^(1/(alpha+beta))            (Hoffmann et al. 2022)
    reference:    G = alpha A / (beta B)^(1/(alpha+beta))              (coded since 926237e: `**` before `/`)
    no-exponent:  G = alpha A / (beta B)                               (coded before 926237e)
    """
    if formula == "hoffmann":
        return (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    if formula == "reference":
        return (alpha * A) / (beta * B) ** (1.0 / (alpha + beta))
    if formula == "no-exponent":
        return alpha * A / (beta * B)
    raise AlignlabError(f"unknown --g-formula {formula!r}; use one of {', '.join(G_FORMULAS)}")


def kl_divergence(N, D, A, B, alpha, beta):
    """Reducible loss A/N^alpha + B/D^beta, read as per-token KL in nats (spec §3.1)."""
    return A / N**alpha + B / D**beta


def optimal_n_d(C, A, B, alpha, beta, formula: GFormula = "hoffmann"):
    """(N_opt, D_opt) for compute C = 6ND under allocation constant G (spec §5)."""
    G = g_constant(A, B, alpha, beta, formula)
    s = alpha + beta
    return G * (C / 6.0) ** (beta / s), G ** (-1.0) * (C / 6.0) ** (alpha / s)


@dataclass(frozen=True)
class PowerLaw:
    """KL(C) = P C^-gamma under compute-optimal allocation (spec §5 closed form)."""

    gamma: float
    P: float
    G: float


def power_law(law: ScalingLaw, formula: GFormula = "hoffmann") -> PowerLaw:
    """gamma = alpha beta/(alpha+beta), P = (A G^-alpha + B G^beta) 6^gamma."""
    G = float(g_constant(law.A, law.B, law.alpha, law.beta, formula))
    gamma = law.alpha * law.beta / (law.alpha + law.beta)
    P = (law.A * G ** (-law.alpha) + law.B * G**law.beta) * 6.0**gamma
    return PowerLaw(gamma=gamma, P=P, G=G)


def kl_at_compute(C, law: ScalingLaw, formula: GFormula = "hoffmann"):
    """Per-token KL (nats) at training compute C (FLOP) under compute-optimal allocation."""
    N, D = optimal_n_d(np.asarray(C, dtype=float), law.A, law.B, law.alpha, law.beta, formula)
    return kl_divergence(N, D, law.A, law.B, law.alpha, law.beta)
