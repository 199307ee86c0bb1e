"""`DistributionCI`: a normal/lognormal/delta distribution given by a central interval (spec §7).

Mirrors ``common.DistributionCI`` of github.com/epoch-research/timelines-direct-approach (01ffd90):

- normal: mu = (lo + hi)/2 and sigma = (mu - lo)/z with z = Phi^-1(0.5 + width/200);
- lognormal: the same rule on ln lo and ln hi;
- delta: always returns lo.

The standard normal quantile is computed here (Acklam's rational approximation polished by one Halley step
on ``math.erfc``), so no scipy is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from alignlab.errors import AlignlabError

Kind = Literal["normal", "lognormal", "delta"]

# Acklam (2003) coefficients for the inverse normal CDF.
_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_B = (
    -5.447609879822406e01,
    1.615858368580409e02,
    -1.556989798598866e02,
    6.680131188771972e01,
    -1.328068155288572e01,
)
_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)


def norm_cdf(x: float) -> float:
    """Standard normal CDF."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def norm_ppf(p: float) -> float:
    """Standard normal quantile Phi^-1(p) for 0 < p < 1 (relative error ~1e-15)."""
    if not 0.0 < p < 1.0:
        raise AlignlabError(
            f"normal quantile needs 0 < p < 1, got {p}; pass a probability strictly inside (0, 1)"
        )
    plow = 0.02425
    if p < plow:
        q = math.sqrt(-2 * math.log(p))
        x = (((((_C[0] * q + _C[1]) * q + _C[2]) * q + _C[3]) * q + _C[4]) * q + _C[5]) / (
            (((_D[0] * q + _D[1]) * q + _D[2]) * q + _D[3]) * q + 1
        )
    elif p <= 1 - plow:
        q = p - 0.5
        r = q * q
        x = (
            (((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5])
            * q
            / (((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1)
        )
    else:
        q = math.sqrt(-2 * math.log1p(-p))
        x = -(((((_C[0] * q + _C[1]) * q + _C[2]) * q + _C[3]) * q + _C[4]) * q + _C[5]) / (
            (((_D[0] * q + _D[1]) * q + _D[2]) * q + _D[3]) * q + 1
        )
    # One Halley step on e = Phi(x) - p brings the approximation to double precision.
    e = norm_cdf(x) - p
    u = e * math.sqrt(2 * math.pi) * math.exp(x * x / 2)
    return x - u / (1 + x * u / 2)


def z_for_width(width: float) -> float:
    """z such that a central ``width``% interval of N(0,1) is [-z, z] (70% -> 1.0364, 95% -> 1.9600)."""
    if not 0.0 < width < 100.0:
        raise AlignlabError(f"interval width must be in (0, 100) percent, got {width}")
    return norm_ppf(0.5 + width / 200.0)


@dataclass(frozen=True)
class DistributionCI:
    """A distribution described by a central ``width``% interval [lo, hi] (spec §7)."""

    kind: Kind
    """normal, lognormal (interval on ln) or delta (always lo)."""
    width: float
    """Width of the interval in percent, strictly between 0 and 100."""
    lo: float
    """Lower end of the interval."""
    hi: float
    """Upper end of the interval."""

    def __post_init__(self) -> None:
        if self.kind not in ("normal", "lognormal", "delta"):
            raise AlignlabError(f"unknown distribution kind {self.kind!r}; use normal, lognormal or delta")
        for name in ("width", "lo", "hi"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise AlignlabError(f"distribution {name} must be a finite number, got {v!r}")
        if self.kind == "delta":
            return
        if not 0.0 < self.width < 100.0:
            raise AlignlabError(f"interval width must be in (0, 100) percent, got {self.width}")
        if self.lo > self.hi:
            raise AlignlabError(f"interval lo {self.lo} exceeds hi {self.hi}; swap them")
        if self.kind == "lognormal" and self.lo <= 0:
            raise AlignlabError(f"a lognormal interval needs lo > 0, got {self.lo}")

    def mu(self) -> float:
        """Mean of the normal (of ln X for lognormal)."""
        if self.kind == "lognormal":
            return (math.log(self.lo) + math.log(self.hi)) / 2
        return (self.lo + self.hi) / 2

    def sigma(self) -> float:
        """Standard deviation of the normal (of ln X for lognormal); 0 for delta."""
        if self.kind == "delta":
            return 0.0
        lo = math.log(self.lo) if self.kind == "lognormal" else self.lo
        return (self.mu() - lo) / z_for_width(self.width)

    def median(self) -> float:
        if self.kind == "delta":
            return float(self.lo)
        return math.exp(self.mu()) if self.kind == "lognormal" else self.mu()

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` i.i.d. draws.  # [n]"""
        if self.kind == "delta":
            return np.full(n, float(self.lo))
        if self.kind == "lognormal":
            return rng.lognormal(self.mu(), self.sigma(), n)
        return rng.normal(self.mu(), self.sigma(), n)

    def change_width(self, new_width: float = 80.0) -> DistributionCI:
        """Re-express the same distribution as a ``new_width``% interval; mu and sigma are unchanged."""
        if self.kind == "delta":
            return self
        margin = z_for_width(new_width) * self.sigma()
        mu = self.mu()
        if self.kind == "lognormal":
            return DistributionCI(self.kind, new_width, math.exp(mu - margin), math.exp(mu + margin))
        return DistributionCI(self.kind, new_width, mu - margin, mu + margin)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "width": self.width, "lo": self.lo, "hi": self.hi}

    @classmethod
    def from_obj(cls, obj: Any, name: str = "distribution") -> DistributionCI:
        """Build from ``{"kind", "width", "lo", "hi"}`` (a number = delta); AlignlabError if malformed."""
        if isinstance(obj, (int, float)) and not isinstance(obj, bool):
            return cls("delta", 50.0, float(obj), float(obj))
        if (
            not isinstance(obj, dict)
            or set(obj) - {"kind", "width", "lo", "hi"}
            or not {"kind", "lo"} <= set(obj)
        ):
            raise AlignlabError(f'{name}: expected a number or {{"kind", "width", "lo", "hi"}}, got {obj!r}')
        hi = obj.get("hi", obj["lo"])
        return cls(obj["kind"], obj.get("width", 50.0), obj["lo"], hi)
