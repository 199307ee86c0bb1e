"""Maths modes: which k units, allocation constant G and inversion a computation uses (spec §1, §3.4, §5, §6).

- ``reference``: the public reference code at HEAD 01ffd90 as written: log2 numerator over a KL in nats,
  G_ref = alpha A/(beta B)^(1/(alpha+beta)) (operator precedence), two-point line through C = 1e10 and 1e30.
- ``corrected`` (default): nats, Hoffmann's G = (alpha A/(beta B))^(1/(alpha+beta)), closed-form inversion.
- ``gfix``: the intermediate "G fix" column of spec §9 (correct G, bits units).
- ``readme-2023``: the reference maths at commit 50fff99 (G without exponent, noise-free low point).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from alignlab.errors import AlignlabError
from alignlab.forecast.kperf import Criterion, Units, check_confidence
from alignlab.forecast.scaling import G_FORMULAS, GFormula

Inversion = Literal["closed", "interpolate", "interpolate-2023"]
INVERSIONS: tuple[str, ...] = ("closed", "interpolate", "interpolate-2023")


@dataclass(frozen=True)
class Maths:
    """One maths mode; its ``name`` is stamped on every output it makes."""

    name: str
    """Mode label recorded with every number (reference, corrected, gfix, readme-2023 or custom)."""
    k_units: Units = "nats"
    """nats (unit-consistent) or bits (log2 numerator over nats, as coded)."""
    g_formula: GFormula = "hoffmann"
    """Allocation constant: hoffmann, reference (as coded since 926237e) or no-exponent (before 926237e)."""
    inversion: Inversion = "closed"
    """closed (exact power law), interpolate (reference two-point line) or interpolate-2023 (50fff99)."""
    confidence: float = 0.9
    """Discriminator confidence c; the SPRT error rates are a = b = 1 - c."""
    criterion: Criterion = "wald"
    """wald (Wald's expected sample size) or liu (boundary ln r, Liu 2024)."""
    liu_r: float = 10.0
    """Likelihood-ratio boundary r for --criterion liu."""

    def __post_init__(self) -> None:
        check_confidence(self.confidence)
        if self.k_units not in ("nats", "bits"):
            raise AlignlabError(f"unknown --k-units {self.k_units!r}; use nats or bits")
        if self.g_formula not in G_FORMULAS:
            raise AlignlabError(f"unknown --g-formula {self.g_formula!r}; use one of {', '.join(G_FORMULAS)}")
        if self.inversion not in INVERSIONS:
            raise AlignlabError(f"unknown --inversion {self.inversion!r}; use one of {', '.join(INVERSIONS)}")
        if self.criterion not in ("wald", "liu"):
            raise AlignlabError(f"unknown --criterion {self.criterion!r}; use wald or liu")
        r = self.liu_r
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 1.0 < r < float("inf"):
            raise AlignlabError(f"--liu-r must be a finite number above 1, got {r!r}; default 10")

    def describe(self) -> dict:
        return {
            "mode": self.name,
            "k_units": self.k_units,
            "g_formula": self.g_formula,
            "inversion": self.inversion,
            "confidence": self.confidence,
            "criterion": self.criterion,
            "liu_r": self.liu_r,
        }


REFERENCE = Maths("reference", k_units="bits", g_formula="reference", inversion="interpolate")
CORRECTED = Maths("corrected", k_units="nats", g_formula="hoffmann", inversion="closed")
GFIX = Maths("gfix", k_units="bits", g_formula="hoffmann", inversion="closed")
README_2023 = Maths("readme-2023", k_units="bits", g_formula="no-exponent", inversion="interpolate-2023")
MODES: dict[str, Maths] = {m.name: m for m in (REFERENCE, CORRECTED, GFIX, README_2023)}


def get_mode(name: str, confidence: float | None = None, **overrides: str | None) -> Maths:
    """A named mode, optionally with --k-units/--g-formula/--inversion overrides (then named ``custom``)."""
    if name not in MODES:
        raise AlignlabError(f"unknown maths mode {name!r}; use one of {', '.join(MODES)}")
    mode = MODES[name]
    changes = {k: v for k, v in overrides.items() if v is not None and getattr(mode, k) != v}
    if changes:
        mode = replace(mode, name="custom", **changes)
    if confidence is not None and confidence != mode.confidence:
        mode = replace(mode, confidence=confidence)
    return mode
