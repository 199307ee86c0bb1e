"""Monte Carlo over the compute requirement for TAI (spec §4, §7).

Per sample: a slowdown s and a k-performance k from their lognormal priors, one noisy scaling-law draw shared
by both evaluation points of the inversion, then log10 C. Four variants are kept: raw, updated on no TAI yet,
scaled (upper-bound adjustment only) and updated then scaled (the app's default, used by the timeline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from alignlab.errors import AlignlabError
from alignlab.forecast.distributions import DistributionCI
from alignlab.forecast.inversion import log10_compute_for_k
from alignlab.forecast.modes import Maths
from alignlab.forecast.posterior import UpdateModel, scale_upper_bound, update_on_no_tai
from alignlab.forecast.runconfig import RequirementsConfig
from alignlab.forecast.scaling import ScalingLaw, draw_noise

Variant = Literal["raw", "updated", "scaled", "updated_scaled"]
VARIANTS: tuple[str, ...] = ("raw", "updated", "scaled", "updated_scaled")
QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)
PERCENTILES: tuple[int, ...] = (1, 5, 10, 25, 50, 75, 90, 95, 99)


@dataclass(frozen=True)
class RequirementInputs:
    """Priors and adjustments of the requirement stage (spec §7); defaults are the reference code's at HEAD."""

    slowdown: DistributionCI = DistributionCI("lognormal", 70, 9.84, 290)
    """Human-judge slowdown s (lognormal, 70% CI [9.84, 290], median 53.42)."""
    k_performance: DistributionCI = DistributionCI("lognormal", 70, 3129, 141714)
    """Task horizon k in tokens (lognormal, 70% CI [3 129, 141 714], median 21 058)."""
    update: UpdateModel = field(default_factory=UpdateModel)
    """The no-TAI-yet likelihood (its decay_exponent is an --inputs key)."""
    scale_factor: float = 5.0 / 7.0
    """Upper-bound adjustment slope in (0, 1]: x' = factor (x - anchor) + anchor (1 = no adjustment)."""
    scale_anchor: float = 25.0
    """Upper-bound adjustment anchor, log10 FLOP."""
    update_on_no_tai: bool = True
    """Whether the timeline uses the requirement updated on no TAI yet (the app's update_on_no_tai)."""
    scale_tai_requirements: bool = True
    """Whether the timeline uses the upper-bound-adjusted requirement (the app's scale_tai_requirements)."""

    def __post_init__(self) -> None:
        for key in ("slowdown", "k_performance"):
            dist = getattr(self, key)
            if not isinstance(dist, DistributionCI) or dist.kind == "normal" or dist.lo <= 0:
                raise AlignlabError(
                    f"--inputs {key}: use a lognormal or a positive delta (draws must be > 0)"
                )
        f = self.scale_factor
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f <= 1.0:
            raise AlignlabError(f"scale_factor must be in (0, 1] (1 = no adjustment), got {f!r}; default 5/7")
        a = self.scale_anchor
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
            raise AlignlabError(f"scale_anchor must be a finite log10 FLOP value, got {a!r}; default 25")
        for key in ("update_on_no_tai", "scale_tai_requirements"):
            if not isinstance(getattr(self, key), bool):
                raise AlignlabError(f"{key} must be true or false, got {getattr(self, key)!r}")

    @property
    def variant(self) -> str:
        """The requirement variant the timeline pairs with rollouts."""
        return {
            (True, True): "updated_scaled",
            (True, False): "updated",
            (False, True): "scaled",
            (False, False): "raw",
        }[(self.update_on_no_tai, self.scale_tai_requirements)]

    def describe(self) -> dict:
        return {
            "slowdown": self.slowdown.to_dict(),
            "k_performance": self.k_performance.to_dict(),
            "decay_exponent": self.update.decay_exponent,
            "observed_runs": [list(p) for p in self.update.observed_runs],
            "scale_factor": self.scale_factor,
            "scale_anchor": self.scale_anchor,
            "update_on_no_tai": self.update_on_no_tai,
            "scale_tai_requirements": self.scale_tai_requirements,
        }


@dataclass(frozen=True)
class RequirementSamples:
    """Requirement draws in log10 effective FLOP, one array per variant, and their provenance."""

    mode: str
    params: str
    seed: int
    samples: int
    posterior: str
    non_finite: int
    prior_mu: float
    prior_sigma: float
    raw: np.ndarray  # [n - non_finite]
    updated: np.ndarray  # [n]
    scale_factor: float = 5.0 / 7.0
    scale_anchor: float = 25.0

    def variant(self, name: str) -> np.ndarray:
        if name == "raw":
            return self.raw
        if name == "updated":
            return self.updated
        if name == "scaled":
            return scale_upper_bound(self.raw, self.scale_factor, self.scale_anchor)
        if name == "updated_scaled":
            return scale_upper_bound(self.updated, self.scale_factor, self.scale_anchor)
        raise AlignlabError(f"unknown requirement variant {name!r}; use one of {', '.join(VARIANTS)}")

    def quantiles(self, qs: tuple[float, ...] = QUANTILES) -> dict[str, list[float]]:
        return {v: [float(x) for x in np.quantile(self.variant(v), qs)] for v in VARIANTS}

    def percentiles(self) -> dict[str, dict[str, float]]:
        """Percentiles 1..99 of every variant, log10 effective FLOP."""
        return {
            v: {f"p{p}": float(x) for p, x in zip(PERCENTILES, np.percentile(self.variant(v), PERCENTILES))}
            for v in VARIANTS
        }

    def summary(self) -> dict:
        return {
            "mode": self.mode,
            "params": self.params,
            "seed": self.seed,
            "samples": self.samples,
            "posterior": self.posterior,
            "non_finite": self.non_finite,
            "prior_fit": {"mu": self.prior_mu, "sigma": self.prior_sigma},
            "quantiles_p10_p50_p90": self.quantiles(),
            "percentiles": self.percentiles(),
        }


def sample_requirements(
    law: ScalingLaw,
    maths: Maths,
    cfg: RequirementsConfig,
    inputs: RequirementInputs | None = None,
    rng: np.random.Generator | None = None,
) -> RequirementSamples:
    """Draw the requirement distribution. Draw order: slowdown, k, scaling-law noise, posterior."""
    inputs = inputs or RequirementInputs()
    rng = rng if rng is not None else np.random.default_rng(cfg.seed)
    n = cfg.samples
    s = inputs.slowdown.sample(rng, n)  # [n]
    k = inputs.k_performance.sample(rng, n)  # [n]
    draws = draw_noise(law, rng, n)
    raw_all = log10_compute_for_k(k, s, draws, maths, law)  # [n]
    finite = np.isfinite(raw_all)
    raw = raw_all[finite]
    post = update_on_no_tai(raw, rng, n, cfg.posterior, inputs.update, cfg.is_draws, cfg.seed)
    return RequirementSamples(
        mode=maths.name,
        params=law.name,
        seed=cfg.seed,
        samples=n,
        posterior=cfg.posterior,
        non_finite=int((~finite).sum()),
        prior_mu=post.prior_mu,
        prior_sigma=post.prior_sigma,
        raw=raw,
        updated=post.samples,
        scale_factor=inputs.scale_factor,
        scale_anchor=inputs.scale_anchor,
    )
