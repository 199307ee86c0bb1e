"""From a target k-performance to log10 training compute (spec §6).

With E dropped and compute-optimal allocation, KL(C) = P C^-gamma, so log10 C is exactly linear in log10 k:
    log10 C = log10 6 + (1/gamma) [log10(A G^-alpha + B G^beta) - log10(K_c s / k)].
The reference instead draws a line through log10 k evaluated at C = 1e10 and C = 1e30, which is the same
line (to rounding) whenever both points use the same parameters. At commit 50fff99 the low point used the
central parameters and the high point the noisy draw (``interpolate-2023``), which is not the same line.
"""

from __future__ import annotations

import numpy as np

from alignlab.errors import AlignlabError
from alignlab.forecast.kperf import k_constant
from alignlab.forecast.modes import Maths
from alignlab.forecast.scaling import LawDraws, ScalingLaw, central, g_constant, kl_divergence, optimal_n_d

LOW_POINT = 10.0  # log10 FLOP of the reference's first evaluation point (k_performance.py)
HIGH_POINT = 30.0  # log10 FLOP of the second


def log10_k_at_compute(log10_c, slowdown, draws: LawDraws, maths: Maths) -> np.ndarray:
    """log10 k-performance reached with compute 10^log10_c under compute-optimal allocation.  # [n]"""
    C = 10.0 ** np.asarray(log10_c, dtype=float)
    N, D = optimal_n_d(C, draws.A, draws.B, draws.alpha, draws.beta, maths.g_formula)
    kl = kl_divergence(N, D, draws.A, draws.B, draws.alpha, draws.beta)
    K = k_constant(maths.confidence, maths.k_units, maths.criterion, maths.liu_r)
    return np.log10(K * np.asarray(slowdown, dtype=float) / kl)


def _closed(k, slowdown, d: LawDraws, maths: Maths) -> np.ndarray:
    G = g_constant(d.A, d.B, d.alpha, d.beta, maths.g_formula)
    gamma = d.alpha * d.beta / (d.alpha + d.beta)
    K = k_constant(maths.confidence, maths.k_units, maths.criterion, maths.liu_r)
    prefactor = np.log10(d.A * G ** (-d.alpha) + d.B * G**d.beta)
    return np.log10(6.0) + (prefactor - np.log10(K * slowdown / k)) / gamma


def _line(k, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The reference's two-point fit: log10 C = m log10 k + b through (low, 1e10) and (high, 1e30)."""
    m = (HIGH_POINT - LOW_POINT) / (high - low)
    b = LOW_POINT - low * m
    return m * np.log10(k) + b


def log10_compute_for_k(
    k, slowdown, draws: LawDraws, maths: Maths, law: ScalingLaw | None = None
) -> np.ndarray:
    """log10 training FLOP at which a judge with slowdown s needs k tokens.  # [n] (broadcast)

    ``law`` supplies the central parameters for ``interpolate-2023``. Non-finite results are returned as is;
    callers count and drop them.
    """
    k = np.asarray(k, dtype=float)
    s = np.asarray(slowdown, dtype=float)
    if np.any(~np.isfinite(k)) or np.any(k <= 0):
        raise AlignlabError("k must be a positive finite number of tokens")
    if np.any(~np.isfinite(s)) or np.any(s <= 0):
        raise AlignlabError("slowdown must be a positive finite number")
    with np.errstate(all="ignore"):
        if maths.inversion == "closed":
            return _closed(k, s, draws, maths)
        high = log10_k_at_compute(HIGH_POINT, s, draws, maths)
        if maths.inversion == "interpolate":
            low = log10_k_at_compute(LOW_POINT, s, draws, maths)
        elif maths.inversion == "interpolate-2023":
            if law is None:
                raise AlignlabError("interpolate-2023 needs the central scaling law for its low point")
            low = log10_k_at_compute(LOW_POINT, s, central(law, np.size(draws.A)), maths)
        else:
            raise AlignlabError(f"unknown inversion {maths.inversion!r}")
        return _line(k, low, high)


def log10_compute_point(k: float, slowdown: float, law: ScalingLaw, maths: Maths) -> float:
    """Deterministic log10 C for one (k, s) with the central (noise-free) parameters."""
    return float(log10_compute_for_k(k, slowdown, central(law, 1), maths, law)[0])
