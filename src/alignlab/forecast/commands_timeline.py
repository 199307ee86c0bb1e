"""Handlers of `alignlab forecast timeline|compare|sensitivity` (imported lazily by cli.py)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from pathlib import Path
from typing import NamedTuple

from alignlab.forecast.commands import _confidence, _print_json, _run_config
from alignlab.forecast.modes import Maths
from alignlab.forecast.output import dropped_draw_warning, emit_warnings, prepare_out, write_json
from alignlab.forecast.pipeline import (
    README_PROBS,
    README_YEARS,
    Preset,
    compare,
    get_preset,
    preset_modes,
    run_modes,
    with_params,
)
from alignlab.forecast.reference_values import HEAD_TIMELINE
from alignlab.forecast.runconfig import RequirementsConfig
from alignlab.forecast.scenario import Scenario, build_scenario, custom_maths, provenance, provenance_line

README_PRESET = "readme-2023-08-23"  # the only preset whose numbers the README reports


class Setup(NamedTuple):
    preset: Preset
    cfg: RequirementsConfig
    scenario: Scenario
    modes: list[Maths]
    out: Path | None
    record: dict  # provenance, with its one-line form under "provenance_line"


def _setup(args: argparse.Namespace) -> Setup:
    """Validate every option and input, and create --out, before any work."""
    c = _confidence(args.confidence)
    preset = get_preset(args.preset)
    preset = replace(preset, reference_maths=replace(preset.reference_maths, confidence=c))
    cfg = with_params(_run_config(args), preset, args.params)
    scenario = build_scenario(args, preset.inputs, c)
    modes = preset_modes(preset, custom_maths(scenario.maths_overrides, c))
    out = prepare_out(args.out)
    record = provenance(preset.name, cfg, scenario)
    record["confidence"] = c
    record["provenance_line"] = provenance_line(record)
    return Setup(preset, cfg, scenario, modes, out, record)


def _inputs_record(scenario: Scenario) -> dict:
    return {
        "requirement_inputs": scenario.requirement.describe(),
        "timeline_inputs": asdict(scenario.timeline),
    }


def _pristine_head(st: Setup) -> bool:
    return (
        st.preset.name == "head"
        and st.cfg.params == "besiroglu2024"
        and not st.scenario.overrides
        and st.record["confidence"] == 0.9
    )


def cmd_timeline(args: argparse.Namespace) -> int:
    st = _setup(args)
    runs = run_modes(
        st.preset, st.cfg, st.modes, req_inputs=st.scenario.requirement, inputs=st.scenario.timeline
    )
    summaries = {m: r.summary() for m, r in runs.items()}
    warnings = [
        w
        for r in runs.values()
        for w in dropped_draw_warning(
            r.requirements.non_finite, st.cfg.samples, r.requirements.params, r.mode
        )
    ]
    emit_warnings(warnings)
    record = {**st.record, **_inputs_record(st.scenario), "modes": summaries, "warnings": warnings}
    if st.preset.name == README_PRESET:
        record["readme"] = {"probabilities_pct": README_PROBS, "quantile_years": README_YEARS}
    if _pristine_head(st):
        record["spec_head_timeline_pct"] = HEAD_TIMELINE
    if st.out is not None:
        _timeline_plots(st, runs, record)
        write_json(st.out / "timeline.json", record)
    if args.json:
        _print_json(record)
        return 0
    _print_timeline(st, summaries)
    return 0


def _timeline_plots(st: Setup, runs: dict, record: dict) -> None:
    from alignlab.forecast.plots import plot_arrival, plot_requirements
    from alignlab.forecast.supply_plots import plot_supply

    readme = README_PROBS if st.preset.name == README_PRESET else None
    plot_arrival({m: r.arrival for m, r in runs.items()}, st.out / "arrival_cdf.png", readme, record)
    line = st.record["provenance_line"]
    plot_requirements(
        {m: r.requirements for m, r in runs.items()}, st.out / "requirements.png", line, st.record
    )
    plot_supply(runs, st.out, line, st.record)


def _print_timeline(st: Setup, summaries: dict) -> None:
    readme = st.preset.name == README_PRESET
    print(f"TAI arrival: {st.record['provenance_line']}")
    print(
        f"{'mode':<12} {'P2030%':>7} {'P2050%':>7} {'P2100%':>7}  {'p10':>5} {'p50':>5} {'p90':>6}  "
        + (f"{'dP vs README (pts)':<22} " if readme else "")
        + "first-passage P2030/2050/2100"
    )
    for mode, s in summaries.items():
        p, y = s["probabilities_pct_exact"], s["quantile_years"]
        d = "/".join(f"{p[k] - README_PROBS[k]:+.1f}" for k in README_PROBS)
        fp = "/".join(f"{v:.1f}" for v in s["first_passage_pct"].values())
        print(
            f"{mode:<12} {p['2030']:>7.1f} {p['2050']:>7.1f} {p['2100']:>7.1f}  {y['p10']:>5} {y['p50']:>5} "
            f"{y['p90']:>6}  " + (f"{d:<22} " if readme else "") + fp
        )
    if readme:
        print(
            f"{'README':<12} {README_PROBS['2030']:>7} {README_PROBS['2050']:>7} {README_PROBS['2100']:>7}  "
            f"{README_YEARS['p10']:>5} {README_YEARS['p50']:>5} {README_YEARS['p90']:>6}"
        )
    if _pristine_head(st):
        for mode, ref in HEAD_TIMELINE.items():
            p = summaries[mode]["probabilities_pct_exact"]
            print(
                f"spec §9 {mode:<10} {ref['2030']:>5} {ref['2050']:>7} {ref['2100']:>7}  (delta "
                + "/".join(f"{p[k] - ref[k]:+.1f}" for k in ref)
                + ")"
            )


def cmd_compare(args: argparse.Namespace) -> int:
    st = _setup(args)
    scenario = st.scenario if st.scenario.overrides else None
    result = compare(
        st.preset,
        st.cfg,
        with_timeline=not args.no_timeline,
        custom=st.modes[2] if len(st.modes) > 2 else None,
        req_inputs=scenario.requirement if scenario else None,
        inputs=scenario.timeline if scenario else None,
    )
    entries = list(result["modes"].items()) + list(result.get("preset_inputs", {}).get("modes", {}).items())
    warnings = [
        w for m, e in entries for w in dropped_draw_warning(e["non_finite"], st.cfg.samples, st.cfg.params, m)
    ]
    emit_warnings(warnings)
    record = {**st.record, **_inputs_record(st.scenario), **result, "warnings": warnings}
    if st.out is not None:
        write_json(st.out / "compare.json", record)
    if args.json:
        _print_json(record)
        return 0
    _print_compare(st, result)
    return 0


def _print_compare(st: Setup, result: dict) -> None:
    variants = ("raw", "updated", "scaled", "updated_scaled")
    print(f"{' vs '.join(result['modes'])}: {st.record['provenance_line']}")
    print(f"{'median log10 FLOP':<24}" + "".join(f"{v:>16}" for v in variants))
    for mode, entry in result["modes"].items():
        print(f"{mode:<24}" + "".join(f"{entry['median_log10_flop'][v]:>16.2f}" for v in variants))
    ref = result["reference_mode"]
    for mode, d in result["difference_vs_reference"].items():
        label = f"{mode} - {ref} (OOM)"
        print(f"{label:<24}" + "".join(f"{d['median_log10_flop_oom'][v]:>+16.2f}" for v in variants))
    if "timeline" not in result["modes"][ref]:
        return
    for mode, entry in result["modes"].items():
        t = entry["timeline"]
        print(
            f"{mode:<12} arrival p10/p50/p90 {'/'.join(t['quantile_years'].values())}; P(2030/2050/2100) "
            + "/".join(f"{v:.1f}%" for v in t["probabilities_pct_exact"].values())
        )
    for mode, d in result["difference_vs_reference"].items():
        print(
            f"{mode} - {ref} in years: "
            + ", ".join(
                f"{q} {('n/a' if v is None else f'{v:+.0f}')}" for q, v in d["quantile_years"].items()
            )
        )
    if "scenario_effect" in result:
        print("effect of the overrides (overrides - preset inputs, same seed):")
        for mode, d in result["scenario_effect"].items():
            dy = d["median_year_fractional"]
            print(
                f"  {mode:<12} requirement median (as paired with rollouts) "
                f"{d['timeline_requirement_median_oom']:+.2f} OOM, median arrival {'n/a' if dy is None else f'{dy:+.1f}'} yr, P(2030/2050/2100) "
                + "/".join(f"{v:+.1f}" for v in d["probabilities_pct_points"].values())
                + " pts"
            )


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from alignlab.forecast.sensitivity import sensitivity

    st = _setup(args)
    results = [
        sensitivity(st.preset, m, st.cfg, st.scenario.requirement, st.scenario.timeline) for m in st.modes
    ]
    record = {**st.record, **_inputs_record(st.scenario), "modes": [r.to_dict() for r in results]}
    if st.out is not None:
        from alignlab.forecast.supply_plots import plot_tornado

        plot_tornado(results, st.out / "tornado.png", st.record["provenance_line"], st.record)
        write_json(st.out / "sensitivity.json", record)
    if args.json:
        _print_json(record)
        return 0
    print(
        f"median arrival year with each input at its interval's low / high end: {st.record['provenance_line']}"
    )
    for res in results:
        base = res.baseline_median_year
        print(f"{res.mode}: baseline {'>2100' if base is None else f'{base:.1f}'}")
        for row in res.rows:
            lo, hi = (
                ">2100" if v is None else f"{v:.1f}" for v in (row.median_year_low, row.median_year_high)
            )
            print(f"  {row.name:<28} [{row.low:g}, {row.high:g}]".ljust(52) + f" {lo:>7} / {hi:>7}")
    return 0
