"""Timeline model: spending x FLOP/$ x algorithmic progress vs the requirement (spec §8.1).

Port of ``timeline.py``/``common.py``/``app.py`` of timelines-direct-approach at 01ffd90, vectorised over
rollouts. E_{i,n} = S_{i,n} + F_{i,n} + A_{i,n} (log10 effective FLOP) is compared with requirement entry i.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from alignlab.errors import AlignlabError
from alignlab.forecast.distributions import DistributionCI
from alignlab.forecast.hardware import CORE_QUANTILES, baseline_flops_per_second

START_YEAR = 2023
END_YEAR = 2101  # exclusive
YEARS = np.arange(START_YEAR, END_YEAR)  # [78]
SECONDS_PER_YEAR = 365 * 24 * 60 * 60
SUMMARY_YEARS = (2030, 2050, 2100)
SUMMARY_QUANTILES = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class TimelineInputs:
    """Inputs of the three timeline blocks; defaults are the reference's at HEAD 01ffd90 (spec §8.1)."""

    invest_growth_rate: DistributionCI = DistributionCI("normal", 80, 146, 246)
    """r, growth of the largest training run's spend, %/yr (before 2023-10-20: normal 90% [25.9, 99.5])."""
    gwp_growth_rate: DistributionCI = DistributionCI("normal", 80, 0.4, 4.75)
    """g, gross world product growth, %/yr."""
    max_gwp_pct: DistributionCI = DistributionCI("lognormal", 95, 0.004, 5)
    """p, the most that one training run can cost, % of GWP."""
    starting_gwp: float = 1.17e14
    """W0, gross world product in 2022, $."""
    starting_max_spend: DistributionCI = DistributionCI("delta", 50, 60, 60)
    """M0, largest training run in 2022, millions of $ (a number, or a distribution; draws <= 0 resampled)."""
    begin_at_initial_spending: bool = False
    """If true, the 2023 spend is M0 itself (no first year of growth)."""
    transistors_per_core_limit: DistributionCI = DistributionCI("lognormal", 70, 0.896, 1.98)
    """L_t, floor on transistors per core, millions."""
    process_size_limit: DistributionCI = DistributionCI("lognormal", 70, 1.4, 2.48)
    """L_p, floor on process size, nm."""
    hardware_specialization: DistributionCI = DistributionCI("lognormal", 80, 0.04, 0.25)
    """h, gains from hardware specialisation, OOM/yr."""
    hardware_specialization_limit: float = math.log10(250)
    """H, cap on specialisation gains, OOM."""
    gpu_dollar_cost: float = 5_000.0
    """c_GPU, price of one GPU, $ (chosen by the reference to give ~4e17 FLOP/$ in 2023)."""
    algo_growth_rate: DistributionCI = DistributionCI("normal", 80, 0.244, 0.775)
    """u, algorithmic progress, OOM/yr (before 2023-10-20: normal 80% [0.21, 0.65])."""
    transfer_multiplier: DistributionCI = DistributionCI("lognormal", 70, 0.4, 1.1)
    """tau, transfer of the measured rate to the TAI domain."""
    algo_limit: DistributionCI = DistributionCI("lognormal", 80, 2.25, 12.1)
    """lambda, log10 of the largest possible algorithmic multiplier, OOM."""

    data_exhausted_year: float | None = None
    """Data-quality scenario (default off): year from which new training tokens are lower-quality data."""
    data_quality_fraction: float = 1.0
    """Data-quality scenario: worth of a token from data_exhausted_year on, in (0, 1] (1 = no effect)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
                raise AlignlabError(f"timeline input {f.name} must be finite, got {v}")
        if self.starting_gwp <= 0 or self.gpu_dollar_cost <= 0:
            raise AlignlabError("starting_gwp and gpu_dollar_cost must be positive")
        # The reference app's validators (app.py, SpendingParams etc.), plus the logs this port takes.
        for name, bound, strict in LOWER_BOUNDS:
            lo = getattr(self, name).lo
            if lo < bound or (strict and lo == bound):
                rel = ">" if strict else ">="
                raise AlignlabError(
                    f"timeline input {name}: its value (or its interval's lower end) must be {rel} {bound:g}, "
                    f"got {lo:g}"
                    + (
                        " (a growth rate of -100%/yr or less makes the growth factor <= 0)"
                        if bound == -100
                        else ""
                    )
                )
        if not 0.0 < self.data_quality_fraction <= 1.0:
            raise AlignlabError(
                f"timeline input data_quality_fraction must be in (0, 1], got {self.data_quality_fraction:g}"
            )

    def data_quality_offset(self, n_years: int = len(YEARS)) -> np.ndarray:
        """log10 effective-data multiplier per year: 0 before data_exhausted_year, log10 f from then.  # [Y]

        The scenario enters the scaling law's data term as B/(f D)^beta. With the allocation re-fitted to the
        cheaper data (B' = B f^-beta, G' = G f^(beta/(alpha+beta)) for the hoffmann and reference G), the
        compute-optimal KL at compute C equals the full-quality KL at f C, so it shifts effective compute by
        log10 f (exact for every parameter draw). Counting every token as worth f is the pessimistic end:
        a run that still uses the whole high-quality stock has an average worth between f and 1.
        """
        years = YEARS[:n_years]
        if self.data_exhausted_year is None or self.data_quality_fraction == 1.0:
            return np.zeros(years.shape)
        return np.where(years >= self.data_exhausted_year, math.log10(self.data_quality_fraction), 0.0)


# (input, bound, strict) on the lower end of its interval: growth factors 1 + r/100 must be > 0; logs of
# spend, GWP share, process size, transistors per core and transfer need > 0; algo_limit >= 0 (app.py).
LOWER_BOUNDS: tuple[tuple[str, float, bool], ...] = (
    ("invest_growth_rate", -100.0, True),
    ("gwp_growth_rate", -100.0, True),
    ("starting_max_spend", 0.0, True),
    ("max_gwp_pct", 0.0, True),
    ("transistors_per_core_limit", 0.0, True),
    ("process_size_limit", 0.0, True),
    ("transfer_multiplier", 0.0, True),
    ("algo_limit", 0.0, False),
)


README_2023_INPUTS = TimelineInputs(
    invest_growth_rate=DistributionCI("normal", 90, 25.9, 99.5),
    algo_growth_rate=DistributionCI("normal", 80, 0.21, 0.65),
)


def inputs_from_dict(obj: object, base: TimelineInputs | None = None) -> TimelineInputs:
    """Override fields of ``base`` from a JSON object (distributions as {"kind","width","lo","hi"})."""
    base = base or TimelineInputs()
    if not isinstance(obj, dict):
        raise AlignlabError("timeline inputs file must hold a JSON object of field -> value")
    names = {f.name: f for f in fields(TimelineInputs)}
    changes: dict[str, object] = {}
    for key, value in obj.items():
        if key not in names:
            raise AlignlabError(f"unknown timeline input {key!r}; valid: {', '.join(names)}")
        current = getattr(base, key)
        if key == "data_exhausted_year":
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise AlignlabError(f"timeline input {key} must be a year or null, got {value!r}")
            changes[key] = None if value is None else float(value)
        elif isinstance(current, DistributionCI):
            changes[key] = DistributionCI.from_obj(value, key)
        elif isinstance(current, bool):
            if not isinstance(value, bool):
                raise AlignlabError(f"timeline input {key} must be true or false")
            changes[key] = value
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise AlignlabError(f"timeline input {key} must be a number, got {value!r}")
            changes[key] = float(value)
    return replace(base, **changes)


def constrain(v, limit):
    """Saturating cap in log space (common.constrain): 10^l (1 - exp(-10^(v - l))), 10^v when exp rounds to 1.

    Both inputs are clamped at 300; a limit of exactly 0 gives 0. Returns a linear value.
    """
    v = np.minimum(np.asarray(v, dtype=float), 300.0)
    lim = np.minimum(np.asarray(limit, dtype=float), 300.0)
    with np.errstate(over="ignore"):
        e = np.exp(-(10.0 ** (v - lim)))
        out = np.where(e != 1.0, 10.0**lim * (1.0 - e), 10.0**v)
    return np.where(lim == 0.0, 0.0, out)


def resample_positive(x: np.ndarray, rng: np.random.Generator, name: str = "input") -> np.ndarray:
    """common.resample_between(min=0): keep draws > 0 in order, append picks from them for the rest."""
    valid = x[x > 0]
    if valid.size == 0:
        raise AlignlabError(f"every draw of timeline input {name} is out of range; move its interval up")
    return np.concatenate([valid, rng.choice(valid, size=x.size - valid.size)])


def spending_path(
    r_pct,
    g_pct,
    p_pct,
    m0_millions,
    starting_gwp: float = 1.17e14,
    n_years: int = len(YEARS),
    begin_at_initial_spending: bool = False,
) -> np.ndarray:
    """S from per-rollout growth rates r, g (%/yr), cap p (% of GWP) and M0 (millions $).  # [n, Y]"""
    r_mult = np.log10(1 + np.asarray(r_pct, dtype=float) / 100)[:, None]  # [n, 1]
    g_mult = np.log10(1 + np.asarray(g_pct, dtype=float) / 100)[:, None]
    m0 = np.asarray(m0_millions, dtype=float)
    steps = np.arange(1, n_years + 1)[None, :]  # [1, Y]; one year of growth before the first value
    v = np.log10(m0 * 1e6)[:, None] + steps * r_mult
    lim = math.log10(starting_gwp) + steps * g_mult + np.log10(np.asarray(p_pct, dtype=float) / 100)[:, None]
    s = np.log10(np.maximum(1e-10, constrain(v, lim)))
    if begin_at_initial_spending:
        s = np.concatenate([np.log10(m0 * 1e6)[:, None], s[:, :-1]], axis=1)
    return s


def spending(
    inputs: TimelineInputs, rng: np.random.Generator, n: int, n_years: int = len(YEARS)
) -> np.ndarray:
    """S: log10 $ on the largest training run.  # [n, n_years]"""
    r = inputs.invest_growth_rate.sample(rng, n)  # [n]
    r = (resample_positive(1 + r / 100, rng, "invest_growth_rate") - 1) * 100
    p = inputs.max_gwp_pct.sample(rng, n)
    g = (resample_positive(1 + inputs.gwp_growth_rate.sample(rng, n) / 100, rng, "gwp_growth_rate") - 1) * 100
    m0 = inputs.starting_max_spend.sample(rng, n)
    if np.any(m0 <= 0):
        m0 = resample_positive(m0, rng, "starting_max_spend")
    return spending_path(r, g, p, m0, inputs.starting_gwp, n_years, inputs.begin_at_initial_spending)


def flops_per_dollar(
    inputs: TimelineInputs, rng: np.random.Generator, n: int, n_years: int = len(YEARS)
) -> np.ndarray:
    """F: log10 FLOP per $ over a GPU's amortisation period.  # [n, n_years]"""
    lt = inputs.transistors_per_core_limit.sample(rng, n)
    lp = inputs.process_size_limit.sample(rng, n)
    h = inputs.hardware_specialization.sample(rng, n)
    q_idx = rng.integers(0, len(CORE_QUANTILES), size=n)  # quantile line of core counts, one per rollout
    base = baseline_flops_per_second(lp, lt, q_idx, n_years)  # [n, Y]
    return flops_per_dollar_path(base, h, inputs.hardware_specialization_limit, inputs.gpu_dollar_cost)


def flops_per_dollar_path(base: np.ndarray, h, limit: float = math.log10(250), gpu_cost: float = 5000.0):
    """F from the baseline B [n, Y] and specialisation h [n] (OOM/yr).  # [n, Y]"""
    steps = np.arange(1, base.shape[1] + 1)[None, :]
    rate = base + np.minimum(steps * np.asarray(h, dtype=float)[:, None], limit)  # R_n
    growth = np.empty_like(rate)
    growth[:, 0] = 0.5  # gamma_0 = 0.5, as coded ("a reasonable, >10% growth rate for the first year")
    growth[:, 1:] = 10.0 ** np.diff(rate, axis=1) - 1
    amortisation_years = 1.2 / (growth + 0.1)
    return rate + np.log10(SECONDS_PER_YEAR * amortisation_years / gpu_cost)


def algorithmic_progress(
    inputs: TimelineInputs, rng: np.random.Generator, n: int, n_years: int = len(YEARS)
) -> np.ndarray:
    """A: log10 effective-compute multiplier from algorithms.  # [n, n_years]"""
    tau = inputs.transfer_multiplier.sample(rng, n)
    a = inputs.algo_growth_rate.sample(rng, n) * tau  # OOM/yr; negative = regress, allowed
    lam = inputs.algo_limit.sample(rng, n)
    return algorithmic_path(a, lam, n_years)


def algorithmic_path(a, lam, n_years: int = len(YEARS)) -> np.ndarray:
    """A from the rate a = u tau (OOM/yr) and limit lambda (OOM), per rollout.  # [n, n_years]"""
    steps = np.arange(1, n_years + 1)[None, :]
    capped = constrain(steps * np.asarray(a, dtype=float)[:, None], np.asarray(lam, dtype=float)[:, None])
    return np.log10(np.maximum(1e-10, capped))


@dataclass(frozen=True)
class Arrival:
    """Per-year exceedance P_n (the reference's "P(TAI by year)") and first-passage P*_n.  # each [78]"""

    years: np.ndarray
    p_exceed: np.ndarray
    p_first: np.ndarray

    def quantile_year(self, q: float, first_passage: bool = False) -> int | None:
        """First year with P >= q (app.quantile), None for '>2100'."""
        curve = self.p_first if first_passage else self.p_exceed
        hit = np.nonzero(curve >= q)[0]
        return int(self.years[hit[0]]) if hit.size else None

    def fractional_year(self, q: float = 0.5) -> float | None:
        """Year where P_n crosses q, linearly interpolated between whole years; None if never."""
        hit = np.nonzero(self.p_exceed >= q)[0]
        if not hit.size:
            return None
        i = int(hit[0])
        if i == 0:
            return float(self.years[0])
        p0, p1 = self.p_exceed[i - 1], self.p_exceed[i]
        return float(self.years[i - 1] + (q - p0) / (p1 - p0))

    def curve(self) -> dict[str, list]:
        """The whole per-year curve: years, P_n and P*_n in percent."""
        return {
            "years": [int(y) for y in self.years],
            "p_exceed_pct": [float(100 * p) for p in self.p_exceed],
            "first_passage_pct": [float(100 * p) for p in self.p_first],
        }

    def prob(self, year: int, first_passage: bool = False) -> float:
        curve = self.p_first if first_passage else self.p_exceed
        return float(curve[int(year) - START_YEAR])

    def summary(self) -> dict:
        """app.timeline_summary plus unrounded and first-passage figures."""

        def fmt(y: int | None) -> str:
            return ">2100" if y is None else str(y)

        return {
            "probabilities_pct": {str(y): round(100 * self.prob(y)) for y in SUMMARY_YEARS},
            "probabilities_pct_exact": {str(y): 100 * self.prob(y) for y in SUMMARY_YEARS},
            "quantile_years": {f"p{int(q * 100)}": fmt(self.quantile_year(q)) for q in SUMMARY_QUANTILES},
            "first_passage_pct": {str(y): 100 * self.prob(y, True) for y in SUMMARY_YEARS},
            "first_passage_quantile_years": {
                f"p{int(q * 100)}": fmt(self.quantile_year(q, True)) for q in SUMMARY_QUANTILES
            },
            "max_gap_pct": float(100 * np.max(self.p_first - self.p_exceed)),
        }


def arrival(effective: np.ndarray, requirement: np.ndarray) -> Arrival:
    """Pair rollout i with requirement i; strict inequality as coded.  effective [n, Y], requirement [n]."""
    if effective.shape[0] != requirement.shape[0]:
        raise AlignlabError(f"{effective.shape[0]} rollouts but {requirement.shape[0]} requirement draws")
    req = np.where(np.isfinite(requirement), requirement, np.inf)  # non-finite draws never arrive
    hit = effective > req[:, None]  # [n, Y]
    return Arrival(
        years=YEARS[: effective.shape[1]].copy(),
        p_exceed=hit.mean(axis=0),
        p_first=np.maximum.accumulate(hit, axis=1).mean(axis=0),
    )


@dataclass(frozen=True)
class Rollouts:
    """Timeline components in log10 units.  # each [n, 78]"""

    spending: np.ndarray
    flops_per_dollar: np.ndarray
    algorithmic: np.ndarray
    data_quality: np.ndarray | None = None  # [78] log10 effective-data multiplier; None = scenario off

    @property
    def effective(self) -> np.ndarray:
        e = self.spending + self.flops_per_dollar + self.algorithmic
        return e if self.data_quality is None else e + self.data_quality[None, :]


def sample_rollouts(inputs: TimelineInputs, rng: np.random.Generator, n: int) -> Rollouts:
    """Draw order after the requirements (as the app): algorithmic, spending, FLOP/$."""
    algo = algorithmic_progress(inputs, rng, n)
    spend = spending(inputs, rng, n)
    fpd = flops_per_dollar(inputs, rng, n)
    dq = inputs.data_quality_offset() if inputs.data_exhausted_year is not None else None
    return Rollouts(spending=spend, flops_per_dollar=fpd, algorithmic=algo, data_quality=dq)
