"""Every assumption a forecaster can change, and the record of what was changed.

A ``Scenario`` is the preset's inputs plus the overrides given with ``--inputs`` (inline JSON or a file),
``--no-update``/``--no-scale`` and the maths options (``--k-units``, ``--g-formula``, ``--inversion``,
``--criterion``, ``--liu-r``). ``provenance`` turns it into the record that every text header, JSON file and
plot title carries.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from alignlab.errors import AlignlabError
from alignlab.forecast.distributions import DistributionCI
from alignlab.forecast.modes import CORRECTED, Maths
from alignlab.forecast.posterior import UpdateModel
from alignlab.forecast.requirements import RequirementInputs
from alignlab.forecast.timeline import TimelineInputs, inputs_from_dict

# --inputs keys that belong to the requirement stage; every other key is a timeline input.
REQUIREMENT_KEYS: tuple[str, ...] = (
    "slowdown",
    "k_performance",
    "decay_exponent",
    "observed_runs",
    "scale_factor",
    "scale_anchor",
    "update_on_no_tai",
    "scale_tai_requirements",
)
MATHS_OPTIONS: tuple[str, ...] = ("k_units", "g_formula", "inversion", "criterion", "liu_r")


@dataclass(frozen=True)
class Scenario:
    """Requirement and timeline inputs in force, and the overrides (as given) that produced them."""

    requirement: RequirementInputs = field(default_factory=RequirementInputs)
    timeline: TimelineInputs = field(default_factory=TimelineInputs)
    overrides: dict = field(default_factory=dict)
    """Input name -> value as given (JSON-able), from --inputs and the --no-update/--no-scale flags."""
    maths_overrides: dict = field(default_factory=dict)
    """Maths option -> value for the extra 'custom' mode (empty: no custom mode)."""


def read_inputs_arg(text: str | None) -> dict:
    """--inputs: an inline JSON object (starts with '{') or the path of a JSON file."""
    if text is None:
        return {}
    inline = text.lstrip().startswith("{")
    where = "--inputs" if inline else f"--inputs {text}"
    try:
        raw = text if inline else Path(text).read_text(encoding="utf-8")
        obj = json.loads(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AlignlabError(
            f"{where}: cannot read JSON ({exc.__class__.__name__}); pass a JSON object or a JSON file"
        ) from None
    if not isinstance(obj, dict):
        raise AlignlabError(f"{where}: expected a JSON object of input name -> value")
    return obj


def _number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AlignlabError(f"--inputs {key} must be a number, got {value!r}")
    return float(value)


def requirement_inputs_from_dict(obj: dict, base: RequirementInputs | None = None) -> RequirementInputs:
    """Apply the requirement keys of an --inputs object to ``base`` (validated by the dataclasses)."""
    req = base or RequirementInputs()
    update = req.update
    changes: dict[str, object] = {}
    for key, value in obj.items():
        if key in ("slowdown", "k_performance"):
            changes[key] = DistributionCI.from_obj(value, key)
        elif key == "decay_exponent":
            update = replace(update, decay_exponent=_number(key, value))
        elif key == "observed_runs":
            if not isinstance(value, list) or not all(isinstance(p, list) for p in value):
                raise AlignlabError("--inputs observed_runs must be a list of [log10 FLOP, years] pairs")
            update = UpdateModel(
                tuple(tuple(_number(key, v) for v in p) for p in value), update.decay_exponent
            )
        elif key in ("scale_factor", "scale_anchor"):
            changes[key] = _number(key, value)
        elif key in ("update_on_no_tai", "scale_tai_requirements"):
            if not isinstance(value, bool):
                raise AlignlabError(f"--inputs {key} must be true or false, got {value!r}")
            changes[key] = value
    return replace(req, update=update, **changes)


def maths_overrides(args: argparse.Namespace) -> dict:
    """The maths options given on the command line (None = not given)."""
    return {k: getattr(args, k) for k in MATHS_OPTIONS if getattr(args, k, None) is not None}


def custom_maths(overrides: dict, confidence: float) -> Maths | None:
    """The corrected maths with the given options applied, named 'custom'; None if no option was given."""
    if not overrides:
        return None
    return replace(CORRECTED, name="custom", confidence=confidence, **overrides)


def build_scenario(
    args: argparse.Namespace, base_timeline: TimelineInputs, confidence: float = 0.9
) -> Scenario:
    """Scenario from --inputs, --no-update/--no-scale (where the command has them) and the maths options."""
    obj = read_inputs_arg(getattr(args, "inputs", None))
    req_part = {k: v for k, v in obj.items() if k in REQUIREMENT_KEYS}
    req = requirement_inputs_from_dict(req_part)
    timeline = inputs_from_dict({k: v for k, v in obj.items() if k not in REQUIREMENT_KEYS}, base_timeline)
    overrides = dict(obj)
    for flag, key in (("no_update", "update_on_no_tai"), ("no_scale", "scale_tai_requirements")):
        if getattr(args, flag, False):
            req = replace(req, **{key: False})
            overrides[key] = False
    maths = maths_overrides(args)
    custom_maths(maths, confidence)  # validate the options before any work
    return Scenario(requirement=req, timeline=timeline, overrides=overrides, maths_overrides=maths)


def provenance(preset: str, cfg, scenario: Scenario) -> dict:
    """What produced a number: preset, every override, params, seed, samples, posterior."""
    return {
        "preset": preset,
        "overrides": scenario.overrides,
        "maths_overrides": scenario.maths_overrides,
        "params": cfg.params,
        "seed": cfg.seed,
        "samples": cfg.samples,
        "posterior": cfg.posterior,
        "requirement_variant": scenario.requirement.variant,
    }


def provenance_line(record: dict) -> str:
    """One line for text headers and plot titles."""
    changes = {**record["overrides"], **record["maths_overrides"]}
    text = ", ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in changes.items())
    return (
        f"preset {record['preset']}"
        + (f" + {text}" if text else " (no overrides)")
        + f"; params {record['params']}, seed {record['seed']}, {record['samples']} samples, "
        f"posterior {record['posterior']}, requirement {record['requirement_variant']}"
    )
