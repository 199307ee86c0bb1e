"""One-at-a-time sensitivity of the arrival median to each uncertain input (the tornado plot).

Each input with an interval is pinned at the low end, then at the high end, of its interval while every other
input keeps its distribution. A pinned input still consumes its own random draws, so every other input sees
exactly the numbers of the baseline run (common random numbers): the bars show the input's effect, not noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from alignlab.forecast.distributions import DistributionCI
from alignlab.forecast.modes import Maths
from alignlab.forecast.pipeline import Preset, run_timeline
from alignlab.forecast.requirements import RequirementInputs
from alignlab.forecast.runconfig import RequirementsConfig
from alignlab.forecast.timeline import TimelineInputs


@dataclass(frozen=True)
class PinnedCI(DistributionCI):
    """A distribution that draws as before (same random stream) but returns one fixed value."""

    value: float = 0.0
    """The value every draw is replaced with."""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        DistributionCI(self.kind, self.width, self.lo, self.hi).sample(rng, n)  # keep the stream aligned
        return np.full(n, float(self.value))

    def median(self) -> float:
        return float(self.value)


@dataclass(frozen=True)
class SensitivityRow:
    """Arrival median (fractional year; None = after 2100) with one input pinned low and high."""

    stage: str
    name: str
    low: float
    high: float
    median_year_low: float | None
    median_year_high: float | None

    def swing(self, baseline: float | None, cap: float = 2101.0) -> float:
        """Width of the bar in years, with '>2100' counted as 2101 (used to sort the tornado)."""
        vals = [cap if v is None else v for v in (self.median_year_low, self.median_year_high)]
        return max(vals) - min(vals)


@dataclass(frozen=True)
class Sensitivity:
    """The tornado of one maths mode."""

    mode: str
    baseline_median_year: float | None
    rows: list[SensitivityRow]

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "baseline_median_year": self.baseline_median_year,
            "rows": [asdict(r) for r in self.rows],
        }


def uncertain_inputs(
    req: RequirementInputs, timeline: TimelineInputs
) -> list[tuple[str, str, DistributionCI]]:
    """(stage, name, distribution) for every input whose interval has width (delta inputs are fixed)."""
    out = [("requirement", k, getattr(req, k)) for k in ("slowdown", "k_performance")]
    out += [("timeline", f.name, getattr(timeline, f.name)) for f in fields(timeline)]
    return [
        (stage, name, d)
        for stage, name, d in out
        if isinstance(d, DistributionCI) and d.kind != "delta" and d.hi > d.lo
    ]


def _pinned(
    req: RequirementInputs, timeline: TimelineInputs, stage: str, name: str, value: float
) -> tuple[RequirementInputs, TimelineInputs]:
    d = getattr(req if stage == "requirement" else timeline, name)
    pin = PinnedCI(d.kind, d.width, d.lo, d.hi, value=value)
    if stage == "requirement":
        return replace(req, **{name: pin}), timeline
    return req, replace(timeline, **{name: pin})


def sensitivity(
    preset: Preset,
    maths: Maths,
    cfg: RequirementsConfig,
    req: RequirementInputs,
    timeline: TimelineInputs,
) -> Sensitivity:
    """Pin each uncertain input at its interval's low and high end; median arrival year each time."""
    base = run_timeline(preset, maths, cfg, req, timeline).arrival.fractional_year(0.5)
    rows = []
    for stage, name, d in uncertain_inputs(req, timeline):
        years = []
        for value in (d.lo, d.hi):
            r, t = _pinned(req, timeline, stage, name, value)
            years.append(run_timeline(preset, maths, cfg, r, t).arrival.fractional_year(0.5))
        rows.append(SensitivityRow(stage, name, d.lo, d.hi, years[0], years[1]))
    rows.sort(key=lambda row: row.swing(base), reverse=True)
    return Sensitivity(mode=maths.name, baseline_median_year=base, rows=rows)
