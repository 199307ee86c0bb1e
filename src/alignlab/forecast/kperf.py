"""k-performance: tokens an ideal discriminator needs to tell model text from human text (spec §3.2-§3.4).

Wald's SPRT with error rates a = b = 1 - c gives E[N] = (2c - 1) ln(c/(1-c)) / KL (1.7578/KL at c = 0.9).
A human judge with slowdown s needs k = s E[N].  The reference code (`k_performance.py`) writes the same
expression with log2 while KL is in nats, so its k is 1/ln 2 = 1.4427 times larger (2.5359 s/KL at c = 0.9).
Liu's criterion uses the SPRT boundary ln r directly: k = s ln r / KL.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from alignlab.errors import AlignlabError

Units = Literal["nats", "bits"]
Criterion = Literal["wald", "liu"]


def check_confidence(c: float) -> float:
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.5 < c < 1.0:
        if isinstance(c, (int, float)) and 0.0 < c <= 0.5:
            raise AlignlabError(f"confidence must be in (0.5, 1) for a discriminator to beat chance, got {c}")
        raise AlignlabError(f"confidence must be in (0, 1) (and above 0.5), got {c}; e.g. --confidence 0.9")
    return float(c)


def wald_constant(c: float = 0.9, units: Units = "nats") -> float:
    """K_c with E[N] = K_c / KL: (2c-1) ln(c/(1-c)) in nats, or the same with log2 as coded (bits)."""
    c = check_confidence(c)
    if units == "nats":
        return (2 * c - 1) * math.log(c / (1 - c))
    if units == "bits":
        return (2 * c - 1) * math.log2(c / (1 - c))
    raise AlignlabError(f"unknown --k-units {units!r}; use nats or bits")


def coded_constant(c: float = 0.9) -> float:
    """K_c exactly as the reference `k_performance` builds it (delta/D intermediates, log2), spec §3.3."""
    c = check_confidence(c)
    delta_0 = c / (1 - c)
    delta_1 = (1 - c) / c
    d1 = (1 - delta_0) / (delta_1 - delta_0)
    d0 = delta_1 * d1
    return -(d1 * math.log2(d0 / d1) + (1 - d1) * math.log2((1 - d0) / (1 - d1)))


def liu_constant(r: float = 10.0) -> float:
    """Liu's SPRT boundary ln r (2.303 nats for r = 10), without Wald's (1 - 2a) weighting."""
    if not r > 1:
        raise AlignlabError(f"Liu's likelihood-ratio boundary r must exceed 1, got {r}")
    return math.log(r)


def k_constant(
    c: float = 0.9, units: Units = "nats", criterion: Criterion = "wald", liu_r: float = 10.0
) -> float:
    """Constant K with k = K s / KL."""
    if criterion == "liu":
        return liu_constant(liu_r)
    if criterion != "wald":
        raise AlignlabError(f"unknown --criterion {criterion!r}; use wald or liu")
    return wald_constant(c, units)


def _check_kl(kl) -> np.ndarray:
    arr = np.asarray(kl, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise AlignlabError("KL must be a positive finite number of nats/token")
    return arr


def _check_slowdown(s) -> np.ndarray:
    arr = np.asarray(s, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise AlignlabError("slowdown must be a positive finite number (1 = ideal discriminator)")
    return arr


def k_performance(
    kl,
    slowdown=1.0,
    c: float = 0.9,
    units: Units = "nats",
    criterion: Criterion = "wald",
    liu_r: float = 10.0,
):
    """k = K s / KL tokens; a float for scalar inputs, an array otherwise."""
    K = k_constant(c, units, criterion, liu_r)
    out = K * _check_slowdown(slowdown) / _check_kl(kl)
    return float(out) if out.ndim == 0 else out


def kl_for_k(
    k, slowdown=1.0, c: float = 0.9, units: Units = "nats", criterion: Criterion = "wald", liu_r: float = 10.0
):
    """Inverse: the per-token KL at which a judge with slowdown s needs k tokens."""
    k_arr = np.asarray(k, dtype=float)
    if not np.all(np.isfinite(k_arr)) or np.any(k_arr <= 0):
        raise AlignlabError("k must be a positive finite number of tokens")
    out = k_constant(c, units, criterion, liu_r) * _check_slowdown(slowdown) / k_arr
    return float(out) if out.ndim == 0 else out
