"""Handlers of `alignlab forecast ...` (imported lazily by cli.py). Each returns an exit code."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace

from alignlab.config import from_args
from alignlab.errors import AlignlabError
from alignlab.forecast.inversion import log10_compute_point
from alignlab.forecast.kperf import check_confidence, k_performance
from alignlab.forecast.modes import CORRECTED, GFIX, REFERENCE
from alignlab.forecast.output import dropped_draw_warning, emit_warnings, prepare_out, write_json
from alignlab.forecast.reference_values import REQUIREMENT_TABLE
from alignlab.forecast.requirements import sample_requirements
from alignlab.forecast.runconfig import RequirementsConfig
from alignlab.forecast.scaling import PARAM_SETS, load_scaling_law, power_law
from alignlab.forecast.scenario import REQUIREMENT_KEYS, build_scenario, custom_maths, maths_overrides
from alignlab.forecast.timeline import TimelineInputs


def _positive(name: str, value: float | None) -> float:
    if value is None or not math.isfinite(value) or value <= 0:
        raise AlignlabError(f"--{name} must be a positive finite number, got {value}")
    return float(value)


def _confidence(value: float | None) -> float:
    if value is None:
        return 0.9
    if not 0.0 < value < 1.0:
        raise AlignlabError(f"--confidence must be in (0, 1), got {value}; e.g. --confidence 0.9")
    return check_confidence(value)


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2))


def cmd_k(args: argparse.Namespace) -> int:
    c = _confidence(args.confidence)
    s = _positive("slowdown", args.slowdown)
    r = _positive("liu-r", args.liu_r)
    law = None
    if args.kl is not None:
        kls = {"as given": _positive("kl", args.kl)}
    elif args.loss is not None:
        law = load_scaling_law(args.params)
        e = args.irreducible if args.irreducible is not None else law.E
        if e is None:
            raise AlignlabError(f"E for {law.name} is not established; pass --irreducible E explicitly")
        kls = {f"loss - E (E = {e})": _positive("loss minus irreducible", args.loss - e)}
    else:
        law = load_scaling_law(args.params)
        compute = _positive("compute", args.compute)
        kls = {
            f"G {g}": float(power_law(law, g).P * compute ** -power_law(law, g).gamma)
            for g in ("reference", "hoffmann")
        }
    rows = []
    for source, kl in kls.items():
        for mode, units, crit in (
            ("corrected", "nats", "wald"),
            ("reference", "bits", "wald"),
            ("liu", "nats", "liu"),
        ):
            if (
                law is not None
                and args.compute is not None
                and (mode == "reference") != (source == "G reference")
            ):
                continue
            k = k_performance(kl, s, c, units, crit, r)
            rows.append(
                {
                    "mode": mode,
                    "criterion": crit,
                    "k_units": units if crit == "wald" else "nats (ln r)",
                    "kl_source": source,
                    "kl_nats_per_token": kl,
                    "k_tokens": k,
                }
            )
    record = {"slowdown": s, "confidence": c, "liu_r": r, "params": law.name if law else None, "rows": rows}
    if args.json:
        _print_json(record)
        return 0
    print(
        f"k-performance at slowdown s = {s:g}, confidence c = {c:g}" + (f", params {law.name}" if law else "")
    )
    print(
        f"{'mode':<10} {'criterion':<9} {'units':<12} {'KL source':<20} {'KL nats/tok':>12} {'k tokens':>12}"
    )
    for row in rows:
        print(
            f"{row['mode']:<10} {row['criterion']:<9} {row['k_units']:<12} {row['kl_source']:<20} "
            f"{row['kl_nats_per_token']:>12.5g} {row['k_tokens']:>12.5g}"
        )
    return 0


def cmd_compute(args: argparse.Namespace) -> int:
    k = _positive("k", args.k)
    s = _positive("slowdown", args.slowdown)
    c = _confidence(args.confidence)
    law = load_scaling_law(args.params)
    modes = [replace(m, confidence=c) for m in (REFERENCE, GFIX, CORRECTED)]
    custom = custom_maths(maths_overrides(args), c)
    modes += [custom] if custom is not None else []
    out = prepare_out(args.out)
    rows = [{**m.describe(), "log10_flop": log10_compute_point(k, s, law, m)} for m in modes]
    by = {r["mode"]: r["log10_flop"] for r in rows}
    m_slope = (law.alpha + law.beta) / (law.alpha * law.beta)
    record = {
        "k": k,
        "slowdown": s,
        "confidence": c,
        "params": law.name,
        "rows": rows,
        "difference_oom": {
            "corrected_minus_reference": by["corrected"] - by["reference"],
            "g_fix_effect": by["gfix"] - by["reference"],
            "units_effect": by["corrected"] - by["gfix"],
            "units_effect_predicted": m_slope * math.log10(1 / math.log(2)),
        },
    }
    if out is not None:
        from alignlab.forecast.plots import plot_k_vs_compute, plot_kl_vs_compute

        shown = [modes[0], modes[2], *modes[3:]]
        plot_k_vs_compute(law, shown, out / "k_vs_compute.png")
        plot_kl_vs_compute(list(PARAM_SETS.values()), shown, out / "kl_vs_compute.png")
        write_json(out / "compute.json", record)
    if args.json:
        _print_json(record)
        return 0
    print(f"log10 training FLOP for k = {k:g} tokens, s = {s:g}, c = {c:g}, params {law.name} (no noise)")
    print(f"{'mode':<10} {'k units':<8} {'G':<12} {'inversion':<17} {'criterion':<9} {'log10 FLOP':>10}")
    for r in rows:
        crit = r["criterion"] + (f" r={r['liu_r']:g}" if r["criterion"] == "liu" else "")
        print(
            f"{r['mode']:<10} {r['k_units']:<8} {r['g_formula']:<12} {r['inversion']:<17} {crit:<9} "
            f"{r['log10_flop']:>10.2f}"
        )
    d = record["difference_oom"]
    print(
        f"corrected - reference: {d['corrected_minus_reference']:+.2f} OOM (G fix {d['g_fix_effect']:+.2f}, "
        f"units {d['units_effect']:+.2f}; predicted units effect {d['units_effect_predicted']:+.2f})"
    )
    return 0


def _run_config(args: argparse.Namespace, params: str | None = None) -> RequirementsConfig:
    return from_args(RequirementsConfig, args, **({"params": params} if params else {}))


def _fmt(q: list[float]) -> str:
    return "/".join(f"{x:.1f}" for x in q)


def cmd_requirements(args: argparse.Namespace) -> int:
    c = _confidence(args.confidence)
    scenario = build_scenario(args, TimelineInputs(), c)
    timeline_keys = [k for k in scenario.overrides if k not in REQUIREMENT_KEYS]
    if timeline_keys:
        raise AlignlabError(
            f"requirements uses only the requirement inputs ({', '.join(REQUIREMENT_KEYS)}); "
            f"{', '.join(timeline_keys)} only affect `forecast timeline --inputs`"
        )
    out = prepare_out(args.out)
    names = [args.params] if args.params else list(PARAM_SETS)
    custom = custom_maths(scenario.maths_overrides, c)
    modes = [replace(m, confidence=c) for m in (REFERENCE, GFIX, CORRECTED)] + ([custom] if custom else [])
    results = []
    for name in names:
        cfg = _run_config(args, name)
        law = load_scaling_law(name)
        for maths in modes:
            results.append((maths, sample_requirements(law, maths, cfg, scenario.requirement)))
    pristine = c == 0.9 and not scenario.overrides
    records = []
    for maths, req in results:
        rec = req.summary()
        rec["maths"] = maths.describe()
        rec["overrides"] = scenario.overrides
        rec["requirement_inputs"] = scenario.requirement.describe()
        rec["spec_table_p10_p50_p90"] = REQUIREMENT_TABLE.get((req.params, req.mode)) if pristine else None
        rec["warnings"] = dropped_draw_warning(req.non_finite, req.samples, req.params, req.mode)
        records.append(rec)
    emit_warnings([w for rec in records for w in rec["warnings"]])
    if out is not None:
        _requirement_plots(out, [r for _, r in results], scenario.overrides)
        write_json(out / "requirements.json", records)
    if args.json:
        _print_json(records)
        return 0
    _print_requirements([r for _, r in results], records, scenario.overrides, c)
    return 0


def _print_requirements(results: list, records: list[dict], overrides: dict, c: float) -> None:
    first = results[0]
    changes = ", ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in overrides.items())
    print(
        f"TAI requirement, log10 effective FLOP, p10/p50/p90; seed {first.seed}, {first.samples} samples, "
        f"posterior {first.posterior}, c = {c:g}; " + (f"overrides: {changes}" if changes else "no overrides")
    )
    print(
        f"{'params':<14} {'mode':<10} {'raw':<16} {'updated':<16} {'upd+scaled':<16} {'dropped':>7}  "
        "spec §9 median (raw/upd/upd+sc) and delta"
    )
    for req, rec in zip(results, records):
        q = rec["quantiles_p10_p50_p90"]
        line = (
            f"{req.params:<14} {req.mode:<10} {_fmt(q['raw']):<16} {_fmt(q['updated']):<16} "
            f"{_fmt(q['updated_scaled']):<16} {req.non_finite:>7}"
        )
        pub = rec["spec_table_p10_p50_p90"]
        if pub:
            line += "  " + ", ".join(
                f"{pub[v][1]:.1f} ({q[v][1] - pub[v][1]:+.2f})" for v in ("raw", "updated", "updated_scaled")
            )
        print(line)


def _requirement_plots(out, results: list, overrides: dict) -> None:
    from alignlab.forecast.plots import plot_requirements

    changes = ", ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in overrides.items())
    for params in dict.fromkeys(r.params for r in results):
        shown = {r.mode: r for r in results if r.params == params and r.mode != "gfix"}
        first = shown[next(iter(shown))]
        title = (
            f"params {params}, seed {first.seed}, {first.samples} samples, posterior {first.posterior}; "
            + (f"overrides: {changes}" if changes else "no overrides")
        )
        plot_requirements(shown, out / f"requirements_{params}.png", title, {"overrides": overrides})
