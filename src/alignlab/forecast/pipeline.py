"""End-to-end runs: presets, requirement + timeline for one mode, and the reference-vs-corrected comparison.

The timeline arithmetic is the same in both modes; they differ only in the requirement vector (spec §8.2).
With one seed both modes consume the random stream identically, so a comparison uses common random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from alignlab.errors import AlignlabError
from alignlab.forecast.modes import CORRECTED, README_2023, REFERENCE, Maths
from alignlab.forecast.requirements import (
    VARIANTS,
    RequirementInputs,
    RequirementSamples,
    RequirementsConfig,
    sample_requirements,
)
from alignlab.forecast.scaling import load_scaling_law
from alignlab.forecast.timeline import (
    README_2023_INPUTS,
    Arrival,
    Rollouts,
    TimelineInputs,
    arrival,
    sample_rollouts,
)

# README of timelines-direct-approach (6c48fb4/50fff99, 2023-08-23): P by 2030/2050/2100, p10/p50/p90 years.
README_PROBS = {"2030": 29, "2050": 69, "2100": 79}
README_YEARS = {"p10": "2026", "p50": "2036", "p90": ">2100"}


@dataclass(frozen=True)
class Preset:
    """A named configuration of the reference repository."""

    name: str
    params: str
    reference_maths: Maths
    inputs: TimelineInputs


PRESETS: dict[str, Preset] = {
    "head": Preset("head", "besiroglu2024", REFERENCE, TimelineInputs()),
    "readme-2023-08-23": Preset("readme-2023-08-23", "hoffmann2022", README_2023, README_2023_INPUTS),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise AlignlabError(f"unknown --preset {name!r}; use one of {', '.join(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class TimelineRun:
    """One mode's requirement draws, rollouts, arrival curves and provenance."""

    maths: Maths
    preset: str
    requirements: RequirementSamples
    rollouts: Rollouts
    arrival: Arrival
    requirement_variant: str

    @property
    def mode(self) -> str:
        return self.maths.name

    def summary(self) -> dict:
        out = {
            "mode": self.mode,
            "maths": self.maths.describe(),
            "preset": self.preset,
            "params": self.requirements.params,
            "seed": self.requirements.seed,
            "samples": self.requirements.samples,
            "posterior": self.requirements.posterior,
            "requirement_variant": self.requirement_variant,
            "non_finite_requirement_draws": self.requirements.non_finite,
            "requirement_prior_fit": {
                "mu": self.requirements.prior_mu,
                "sigma": self.requirements.prior_sigma,
            },
            "requirement_percentiles": self.requirements.percentiles(),
        }
        out.update(self.arrival.summary())
        out["arrival_curve"] = self.arrival.curve()
        return out


def run_timeline(
    preset: Preset,
    maths: Maths,
    cfg: RequirementsConfig,
    req_inputs: RequirementInputs | None = None,
    inputs: TimelineInputs | None = None,
) -> TimelineRun:
    """Requirements, then the three timeline blocks, from one seeded stream (order as the app)."""
    req_inputs = req_inputs or RequirementInputs()
    rng = np.random.default_rng(cfg.seed)
    law = load_scaling_law(cfg.params)
    req = sample_requirements(law, maths, cfg, req_inputs, rng)
    variant = req_inputs.variant
    r = req.variant(variant)
    if r.shape[0] != cfg.samples:  # raw variants lose non-finite draws; they count as never arriving
        r = np.concatenate([r, np.full(cfg.samples - r.shape[0], np.inf)])
    rollouts = sample_rollouts(inputs or preset.inputs, rng, cfg.samples)
    return TimelineRun(
        maths=maths,
        preset=preset.name,
        requirements=req,
        rollouts=rollouts,
        arrival=arrival(rollouts.effective, r),
        requirement_variant=variant,
    )


def preset_modes(preset: Preset, custom: Maths | None = None) -> list[Maths]:
    """The preset's reference maths, the corrected maths, and the custom maths if any options were given."""
    confidence = preset.reference_maths.confidence
    modes = [preset.reference_maths, replace(CORRECTED, confidence=confidence)]
    return modes + ([custom] if custom is not None else [])


def run_modes(
    preset: Preset, cfg: RequirementsConfig, modes: list[Maths] | None = None, **kwargs
) -> dict[str, TimelineRun]:
    """Every mode with the same seed (common random numbers), keyed by mode name."""
    return {m.name: run_timeline(preset, m, cfg, **kwargs) for m in modes or preset_modes(preset)}


def both_modes(preset: Preset, cfg: RequirementsConfig, **kwargs) -> dict[str, TimelineRun]:
    """The preset's reference maths and the corrected maths, keyed by mode name."""
    return run_modes(preset, cfg, preset_modes(preset), **kwargs)


def _year_num(y: str) -> float | None:
    return None if y.startswith(">") else float(y)


def _medians(req: RequirementSamples) -> dict[str, float]:
    return {v: float(np.median(req.variant(v))) for v in VARIANTS}


def _difference(a: dict, b: dict, with_timeline: bool) -> dict:
    """b - a for two compare entries: requirement medians (OOM), arrival years and probabilities."""
    diff: dict = {
        "median_log10_flop_oom": {v: b["median_log10_flop"][v] - a["median_log10_flop"][v] for v in VARIANTS},
        "timeline_requirement_median_oom": b["timeline_requirement"]["median_log10_flop"]
        - a["timeline_requirement"]["median_log10_flop"],
    }
    if with_timeline:
        ta, tb = a["timeline"], b["timeline"]
        years = {}
        for q, y in ta["quantile_years"].items():
            ya, yb = _year_num(y), _year_num(tb["quantile_years"][q])
            years[q] = None if ya is None or yb is None else yb - ya
        diff["quantile_years"] = years
        diff["median_year_fractional"] = (
            None
            if ta["median_year_fractional"] is None or tb["median_year_fractional"] is None
            else tb["median_year_fractional"] - ta["median_year_fractional"]
        )
        diff["probabilities_pct_points"] = {
            y: tb["probabilities_pct_exact"][y] - ta["probabilities_pct_exact"][y]
            for y in ta["probabilities_pct_exact"]
        }
    return diff


def compare_entries(
    preset: Preset,
    cfg: RequirementsConfig,
    modes: list[Maths],
    req_inputs: RequirementInputs | None = None,
    inputs: TimelineInputs | None = None,
    with_timeline: bool = True,
) -> dict[str, dict]:
    """Per mode: maths, dropped draws, requirement medians of every variant and (optionally) the timeline."""
    entries = {}
    for maths in modes:
        if with_timeline:
            run = run_timeline(preset, maths, cfg, req_inputs, inputs)
            req = run.requirements
        else:
            req = sample_requirements(load_scaling_law(cfg.params), maths, cfg, req_inputs)
        variant = (req_inputs or RequirementInputs()).variant
        entry = {
            "maths": maths.describe(),
            "non_finite": req.non_finite,
            "median_log10_flop": _medians(req),
            "timeline_requirement": {"variant": variant, "median_log10_flop": _medians(req)[variant]},
            "percentiles": req.percentiles(),
        }
        if with_timeline:
            entry["timeline"] = {
                **run.arrival.summary(),
                "median_year_fractional": run.arrival.fractional_year(0.5),
            }
        entries[maths.name] = entry
    return entries


def compare(
    preset: Preset,
    cfg: RequirementsConfig,
    with_timeline: bool = True,
    custom: Maths | None = None,
    req_inputs: RequirementInputs | None = None,
    inputs: TimelineInputs | None = None,
) -> dict:
    """Every mode's requirement medians and arrival percentiles, and each mode minus the reference.

    With ``req_inputs``/``inputs`` (a scenario), the preset's own inputs are run too and ``scenario_effect``
    gives scenario minus preset for every mode, so an assumption's effect is read off directly.
    """
    modes = preset_modes(preset, custom)
    ref = modes[0].name
    entries = compare_entries(preset, cfg, modes, req_inputs, inputs, with_timeline)
    out: dict = {
        "preset": preset.name,
        "params": cfg.params,
        "seed": cfg.seed,
        "samples": cfg.samples,
        "posterior": cfg.posterior,
        "reference_mode": ref,
        "modes": entries,
        "difference_vs_reference": {
            m: _difference(entries[ref], e, with_timeline) for m, e in entries.items() if m != ref
        },
    }
    if req_inputs is not None or inputs is not None:
        base = compare_entries(preset, cfg, modes, None, None, with_timeline)
        out["preset_inputs"] = {
            "modes": base,
            "difference_vs_reference": {
                m: _difference(base[ref], e, with_timeline) for m, e in base.items() if m != ref
            },
        }
        out["scenario_effect"] = {m: _difference(base[m], entries[m], with_timeline) for m in entries}
    return out


def with_params(cfg: RequirementsConfig, preset: Preset, params: str | None) -> RequirementsConfig:
    """Use the preset's parameter set unless --params was given."""
    return replace(cfg, params=params or preset.params)
