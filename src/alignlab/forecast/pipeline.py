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
    RequirementInputs,
    RequirementSamples,
    RequirementsConfig,
    sample_requirements,
)
from alignlab.forecast.scaling import load_scaling_law
from alignlab.forecast.timeline import README_2023_INPUTS, Arrival, TimelineInputs, arrival, sample_rollouts

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
    """One mode's requirement draws, arrival curves and provenance."""

    mode: str
    preset: str
    requirements: RequirementSamples
    arrival: Arrival
    requirement_variant: str

    def summary(self) -> dict:
        out = {
            "mode": self.mode,
            "preset": self.preset,
            "params": self.requirements.params,
            "seed": self.requirements.seed,
            "samples": self.requirements.samples,
            "posterior": self.requirements.posterior,
            "requirement_variant": self.requirement_variant,
            "non_finite_requirement_draws": self.requirements.non_finite,
        }
        out.update(self.arrival.summary())
        return out


def run_timeline(
    preset: Preset,
    maths: Maths,
    cfg: RequirementsConfig,
    update: bool = True,
    scale: bool = True,
    req_inputs: RequirementInputs | None = None,
    inputs: TimelineInputs | None = None,
) -> TimelineRun:
    """Requirements, then the three timeline blocks, from one seeded stream (order as the app)."""
    rng = np.random.default_rng(cfg.seed)
    law = load_scaling_law(cfg.params)
    req = sample_requirements(law, maths, cfg, req_inputs, rng)
    variant = ("updated" if update else "raw") + ("_scaled" if scale else "")
    variant = {"raw_scaled": "scaled"}.get(variant, variant)
    r = req.variant(variant)
    if r.shape[0] != cfg.samples:  # raw variants lose non-finite draws; they count as never arriving
        r = np.concatenate([r, np.full(cfg.samples - r.shape[0], np.inf)])
    rollouts = sample_rollouts(inputs or preset.inputs, rng, cfg.samples)
    return TimelineRun(
        mode=maths.name,
        preset=preset.name,
        requirements=req,
        arrival=arrival(rollouts.effective, r),
        requirement_variant=variant,
    )


def both_modes(preset: Preset, cfg: RequirementsConfig, **kwargs) -> dict[str, TimelineRun]:
    """The preset's reference maths and the corrected maths, same seed (common random numbers)."""
    return {
        "reference": run_timeline(preset, preset.reference_maths, cfg, **kwargs),
        "corrected": run_timeline(preset, CORRECTED, cfg, **kwargs),
    }


def _year_num(y: str) -> float | None:
    return None if y.startswith(">") else float(y)


def compare(preset: Preset, cfg: RequirementsConfig, with_timeline: bool = True) -> dict:
    """Both modes' requirement medians (log10 FLOP), arrival percentiles, and corrected - reference."""
    if with_timeline:
        runs = both_modes(preset, cfg)
        reqs = {m: r.requirements for m, r in runs.items()}
    else:
        law = load_scaling_law(cfg.params)
        reqs = {
            "reference": sample_requirements(law, preset.reference_maths, cfg),
            "corrected": sample_requirements(law, CORRECTED, cfg),
        }
    out: dict = {
        "preset": preset.name,
        "params": cfg.params,
        "seed": cfg.seed,
        "samples": cfg.samples,
        "posterior": cfg.posterior,
        "modes": {},
        "difference_corrected_minus_reference": {},
    }
    for mode, req in reqs.items():
        entry = {
            "maths": (preset.reference_maths if mode == "reference" else CORRECTED).describe(),
            "non_finite": req.non_finite,
            "median_log10_flop": {
                v: float(np.median(req.variant(v))) for v in ("raw", "updated", "scaled", "updated_scaled")
            },
        }
        if with_timeline:
            entry["timeline"] = runs[mode].arrival.summary()
        out["modes"][mode] = entry
    ref, cor = out["modes"]["reference"], out["modes"]["corrected"]
    diff: dict = {
        "median_log10_flop_oom": {
            v: cor["median_log10_flop"][v] - ref["median_log10_flop"][v] for v in ref["median_log10_flop"]
        }
    }
    if with_timeline:
        years = {}
        for q, y in ref["timeline"]["quantile_years"].items():
            a, b = _year_num(y), _year_num(cor["timeline"]["quantile_years"][q])
            years[q] = None if a is None or b is None else b - a
        diff["quantile_years"] = years
        diff["probabilities_pct_points"] = {
            y: cor["timeline"]["probabilities_pct_exact"][y] - ref["timeline"]["probabilities_pct_exact"][y]
            for y in ref["timeline"]["probabilities_pct_exact"]
        }
    out["difference_corrected_minus_reference"] = diff
    return out


def with_params(cfg: RequirementsConfig, preset: Preset, params: str | None) -> RequirementsConfig:
    """Use the preset's parameter set unless --params was given."""
    return replace(cfg, params=params or preset.params)
