"""The update on "no TAI yet" (spec §7).

Prior: c ~ Normal(mu, sigma) fitted (maximum likelihood, ddof 0 as scipy's ``norm.fit``) to the raw log10-FLOP
requirement samples. Likelihood of zero arrivals: prod_r exp(-T_r 10^(0.3 (R_r - c))) for the observed
(log10 run size, years) pairs. The reference samples this with PyMC NUTS; the library's default is
deterministic 1-D quadrature of the same density, with importance sampling and PyMC as alternatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from alignlab.errors import AlignlabError
from alignlab.forecast.runconfig import POSTERIOR_METHODS

PosteriorMethod = Literal["quadrature", "is", "pymc"]
GRID_POINTS = 200_001  # quadrature nodes over mu +- 12 sigma


@dataclass(frozen=True)
class UpdateModel:
    """The no-TAI-yet likelihood: observed largest runs and the arrival-rate decay (spec §7)."""

    observed_runs: tuple[tuple[float, float], ...] = ((17.0, 8.0), (23.0, 2.0), (25.0, 1.0))
    """(log10 FLOP of the largest run, years observed without TAI) pairs."""
    decay_exponent: float = 0.3
    """Poisson arrival rate per year is 10^(decay_exponent (R - c)); larger = stronger update."""

    def __post_init__(self) -> None:
        d = self.decay_exponent
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or d <= 0:
            raise AlignlabError(f"decay_exponent must be a positive finite number, got {d!r}; default 0.3")
        for pair in self.observed_runs:
            if (
                len(pair) != 2
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in pair)
                or pair[1] < 0
            ):
                raise AlignlabError(
                    f"observed_runs entries must be [log10 FLOP, years >= 0] pairs, got {pair!r}"
                )


@dataclass(frozen=True)
class Posterior:
    """Posterior draws of the log10-FLOP requirement and the normal prior that produced them."""

    samples: np.ndarray  # [n]
    prior_mu: float
    prior_sigma: float
    method: str


def normal_fit(x: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood normal fit (mean, population std), as ``scipy.stats.norm.fit``."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        raise AlignlabError(
            "need at least 2 finite requirement samples to fit the update prior; raise --samples"
        )
    return float(x.mean()), float(x.std())


def log_likelihood(c: np.ndarray, model: UpdateModel) -> np.ndarray:
    """log P(no arrivals | c) = -sum_r T_r 10^(0.3 (R_r - c)).  # same shape as c"""
    out = np.zeros_like(np.asarray(c, dtype=float))
    with np.errstate(over="ignore"):
        for run, years in model.observed_runs:
            out = out - years * 10.0 ** (model.decay_exponent * (run - c))
    return out


def posterior_cdf(mu: float, sigma: float, model: UpdateModel) -> tuple[np.ndarray, np.ndarray]:
    """Posterior CDF on a 200 001-node grid over mu +- 12 sigma (trapezoid rule).  # ([G], [G])"""
    grid = np.linspace(mu - 12 * sigma, mu + 12 * sigma, GRID_POINTS)  # [G]
    logp = -0.5 * ((grid - mu) / sigma) ** 2 + log_likelihood(grid, model)
    pdf = np.exp(logp - logp.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    keep = np.concatenate([[True], cdf[1:] > cdf[:-1]])  # strictly increasing nodes for interpolation
    return grid[keep], cdf[keep]


def posterior_quantiles(mu: float, sigma: float, qs, model: UpdateModel | None = None) -> np.ndarray:
    """Deterministic posterior quantiles (no sampling noise), log10 FLOP."""
    grid, cdf = posterior_cdf(mu, sigma, model or UpdateModel())
    return np.interp(np.asarray(qs, dtype=float), cdf, grid)


def _quadrature(mu: float, sigma: float, model: UpdateModel, rng: np.random.Generator, n: int) -> np.ndarray:
    grid, cdf = posterior_cdf(mu, sigma, model)
    return np.interp(rng.random(n), cdf, grid)  # inverse-CDF draws


def importance_weights(
    mu: float, sigma: float, model: UpdateModel, rng: np.random.Generator, draws: int
) -> tuple[np.ndarray, np.ndarray]:
    """Prior draws and their normalised likelihood weights.  # ([draws], [draws])"""
    prior = rng.normal(mu, sigma, draws)
    logw = log_likelihood(prior, model)
    w = np.exp(logw - logw.max())
    return prior, w / w.sum()


def _importance(
    mu: float, sigma: float, model: UpdateModel, rng: np.random.Generator, n: int, draws: int
) -> np.ndarray:
    prior, w = importance_weights(mu, sigma, model, rng, draws)
    return prior[rng.choice(draws, size=n, replace=True, p=w)]


def _pymc(mu: float, sigma: float, model: UpdateModel, seed: int, n: int) -> np.ndarray:  # pragma: no cover
    try:
        import pymc as pm
    except ImportError:
        raise AlignlabError(
            "--posterior pymc needs the optional pymc package; pip install pymc, or use "
            "--posterior quadrature"
        ) from None
    with pm.Model():
        c = pm.Normal("compute_req_oom", mu=mu, sigma=sigma)
        for i, (run, years) in enumerate(model.observed_runs):
            rate = 10 ** (model.decay_exponent * (run - c))
            pm.Poisson(f"agi_arrived_{i + 1}", mu=rate * years, observed=0)
        idata = pm.sample(
            draws=n, tune=2000, cores=1, chains=1, target_accept=0.99, progressbar=False, random_seed=seed
        )
    return np.asarray(idata.posterior["compute_req_oom"].values[0], dtype=float)


def update_on_no_tai(
    raw: np.ndarray,
    rng: np.random.Generator,
    n: int,
    method: PosteriorMethod = "quadrature",
    model: UpdateModel | None = None,
    is_draws: int = 200_000,
    seed: int = 0,
) -> Posterior:
    """``n`` i.i.d. draws from the posterior of the normal fit to ``raw`` given no TAI so far."""
    model = model or UpdateModel()
    mu, sigma = normal_fit(raw)
    if not sigma > 0:
        raise AlignlabError(
            "the requirement samples have zero spread; the update needs a non-degenerate prior"
        )
    if method == "quadrature":
        samples = _quadrature(mu, sigma, model, rng, n)
    elif method == "is":
        if is_draws < 1000:
            raise AlignlabError(f"--is-draws must be at least 1000, got {is_draws}")
        samples = _importance(mu, sigma, model, rng, n, is_draws)
    elif method == "pymc":
        samples = _pymc(mu, sigma, model, seed, n)
    else:
        raise AlignlabError(f"unknown --posterior {method!r}; use one of {', '.join(POSTERIOR_METHODS)}")
    return Posterior(samples=samples, prior_mu=mu, prior_sigma=sigma, method=method)


def scale_upper_bound(x: np.ndarray, factor: float = 5.0 / 7.0, anchor: float = 25.0) -> np.ndarray:
    """Upper-bound adjustment x' = factor (x - anchor) + anchor on log10 FLOP; 5/7 about 25 as coded (spec §7)."""
    return factor * (np.asarray(x, dtype=float) - anchor) + anchor
