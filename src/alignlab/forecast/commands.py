"""Handlers of `alignlab forecast ...` (imported lazily by cli.py). Each returns an exit code."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

from alignlab.config import from_args
from alignlab.errors import AlignlabError
from alignlab.forecast.distributions import DistributionCI
from alignlab.forecast.inversion import log10_compute_point
from alignlab.forecast.kperf import check_confidence, k_performance
from alignlab.forecast.modes import CORRECTED, GFIX, REFERENCE, get_mode
from alignlab.forecast.pipeline import (
    README_PROBS,
    README_YEARS,
    both_modes,
    compare,
    get_preset,
    with_params,
)
from alignlab.forecast.reference_values import HEAD_TIMELINE, REQUIREMENT_TABLE
from alignlab.forecast.requirements import RequirementInputs, sample_requirements
from alignlab.forecast.runconfig import RequirementsConfig
from alignlab.forecast.scaling import PARAM_SETS, load_scaling_law, power_law
from alignlab.forecast.timeline import TimelineInputs, inputs_from_dict
from alignlab.io import write_json_atomic


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


def _read_inputs(path: str | None, base: TimelineInputs) -> tuple[RequirementInputs, TimelineInputs]:
    """Split an --inputs JSON file into requirement priors and timeline inputs."""
    if path is None:
        return RequirementInputs(), base
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AlignlabError(
            f"--inputs {path}: cannot read JSON ({exc.__class__.__name__}); fix the file"
        ) from None
    if not isinstance(obj, dict):
        raise AlignlabError(f"--inputs {path}: expected a JSON object of input name -> value")
    req = RequirementInputs()
    for key in ("slowdown", "k_performance"):
        if key in obj:
            dist = DistributionCI.from_obj(obj.pop(key), key)
            if dist.kind == "normal" or dist.lo <= 0:
                raise AlignlabError(
                    f"--inputs {key}: use a lognormal or a positive delta (draws must be > 0)"
                )
            req = replace(req, **{key: dist})
    return req, inputs_from_dict(obj, base)


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
    if any(v is not None for v in (args.k_units, args.g_formula, args.inversion)):
        modes.append(
            get_mode("corrected", c, k_units=args.k_units, g_formula=args.g_formula, inversion=args.inversion)
        )
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
    if args.out:
        from alignlab.forecast.plots import plot_k_vs_compute, plot_kl_vs_compute

        out = Path(args.out)
        plot_k_vs_compute(law, [modes[0], modes[2]], out / "k_vs_compute.png")
        plot_kl_vs_compute(list(PARAM_SETS.values()), [modes[0], modes[2]], out / "kl_vs_compute.png")
        write_json_atomic(out / "compute.json", record)
    if args.json:
        _print_json(record)
        return 0
    print(f"log10 training FLOP for k = {k:g} tokens, s = {s:g}, c = {c:g}, params {law.name} (no noise)")
    print(f"{'mode':<10} {'k units':<8} {'G':<12} {'inversion':<17} {'log10 FLOP':>10}")
    for r in rows:
        print(
            f"{r['mode']:<10} {r['k_units']:<8} {r['g_formula']:<12} {r['inversion']:<17} "
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
    req_inputs, _ = _read_inputs(args.inputs, TimelineInputs())
    names = [args.params] if args.params else list(PARAM_SETS)
    results = []
    for name in names:
        cfg = _run_config(args, name)
        law = load_scaling_law(name)
        for maths in (REFERENCE, GFIX, CORRECTED):
            req = sample_requirements(law, replace(maths, confidence=c), cfg, req_inputs)
            results.append(req)
    records = []
    for req in results:
        rec = req.summary()
        published = (
            REQUIREMENT_TABLE.get((req.params, req.mode)) if c == 0.9 and args.inputs is None else None
        )
        rec["spec_table_p10_p50_p90"] = published
        records.append(rec)
    if args.out:
        _requirement_plots(Path(args.out), results)
        write_json_atomic(Path(args.out) / "requirements.json", records)
    if args.json:
        _print_json(records)
        return 0
    first = results[0]
    print(
        f"TAI requirement, log10 effective FLOP, p10/p50/p90; seed {first.seed}, {first.samples} samples, "
        f"posterior {first.posterior}, c = {c:g}"
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
    return 0


def _requirement_plots(out: Path, results: list) -> None:
    from alignlab.forecast.plots import plot_requirements

    for params in dict.fromkeys(r.params for r in results):
        pair = {r.mode: r for r in results if r.params == params and r.mode in ("reference", "corrected")}
        plot_requirements(pair, out / f"requirements_{params}.png")


def _timeline_setup(args: argparse.Namespace):
    c = _confidence(args.confidence)
    preset = get_preset(args.preset)
    preset = replace(preset, reference_maths=replace(preset.reference_maths, confidence=c))
    cfg = with_params(_run_config(args), preset, args.params)
    req_inputs, inputs = _read_inputs(args.inputs, preset.inputs)
    return preset, cfg, req_inputs, inputs


def cmd_timeline(args: argparse.Namespace) -> int:
    preset, cfg, req_inputs, inputs = _timeline_setup(args)
    runs = both_modes(
        preset, cfg, update=not args.no_update, scale=not args.no_scale, req_inputs=req_inputs, inputs=inputs
    )
    summaries = {m: r.summary() for m, r in runs.items()}
    record = {
        "preset": preset.name,
        "readme": {"probabilities_pct": README_PROBS, "quantile_years": README_YEARS},
        "modes": summaries,
    }
    if args.out:
        from alignlab.forecast.plots import plot_arrival, plot_requirements

        out = Path(args.out)
        plot_arrival({m: r.arrival for m, r in runs.items()}, out / "arrival_cdf.png", README_PROBS, record)
        plot_requirements({m: r.requirements for m, r in runs.items()}, out / "requirements.png")
        write_json_atomic(out / "timeline.json", record)
    if args.json:
        _print_json(record)
        return 0
    s0 = next(iter(summaries.values()))
    print(
        f"TAI arrival, preset {preset.name}, params {s0['params']}, seed {s0['seed']}, "
        f"{s0['samples']} rollouts, "
        f"posterior {s0['posterior']}, requirement {s0['requirement_variant']}"
    )
    print(
        f"{'mode':<12} {'P2030%':>7} {'P2050%':>7} {'P2100%':>7}  {'p10':>5} {'p50':>5} {'p90':>6}  "
        f"{'dP vs README (pts)':<22} first-passage P2030/2050/2100"
    )
    for mode, s in summaries.items():
        p, y = s["probabilities_pct_exact"], s["quantile_years"]
        d = "/".join(f"{p[k] - README_PROBS[k]:+.1f}" for k in README_PROBS)
        fp = "/".join(f"{v:.1f}" for v in s["first_passage_pct"].values())
        print(
            f"{mode:<12} {p['2030']:>7.1f} {p['2050']:>7.1f} {p['2100']:>7.1f}  {y['p10']:>5} {y['p50']:>5} "
            f"{y['p90']:>6}  {d:<22} {fp}"
        )
    print(
        f"{'README':<12} {README_PROBS['2030']:>7} {README_PROBS['2050']:>7} {README_PROBS['2100']:>7}  "
        f"{README_YEARS['p10']:>5} {README_YEARS['p50']:>5} {README_YEARS['p90']:>6}"
    )
    if preset.name == "head" and cfg.params == "besiroglu2024" and args.inputs is None:
        for mode, ref in HEAD_TIMELINE.items():
            p = summaries[mode]["probabilities_pct_exact"]
            print(
                f"spec §9 {mode:<10} {ref['2030']:>5} {ref['2050']:>7} {ref['2100']:>7}  (delta "
                + "/".join(f"{p[k] - ref[k]:+.1f}" for k in ref)
                + ")"
            )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    preset, cfg, req_inputs, inputs = _timeline_setup(args)
    if args.inputs is not None:
        raise AlignlabError(
            "compare uses the preset's inputs; run `forecast timeline --inputs` for custom ones"
        )
    result = compare(preset, cfg, with_timeline=not args.no_timeline)
    if args.out:
        write_json_atomic(Path(args.out) / "compare.json", result)
    if args.json:
        _print_json(result)
        return 0
    print(
        f"reference vs corrected, preset {preset.name}, params {cfg.params}, seed {cfg.seed}, "
        f"{cfg.samples} samples, posterior {cfg.posterior}"
    )
    variants = ("raw", "updated", "scaled", "updated_scaled")
    print(f"{'median log10 FLOP':<20}" + "".join(f"{v:>16}" for v in variants))
    for mode, entry in result["modes"].items():
        print(f"{mode:<20}" + "".join(f"{entry['median_log10_flop'][v]:>16.2f}" for v in variants))
    d = result["difference_corrected_minus_reference"]
    print(f"{'difference (OOM)':<20}" + "".join(f"{d['median_log10_flop_oom'][v]:>+16.2f}" for v in variants))
    if "quantile_years" in d:
        for mode, entry in result["modes"].items():
            t = entry["timeline"]
            print(
                f"{mode:<12} arrival p10/p50/p90 {'/'.join(t['quantile_years'].values())}; P(2030/2050/2100) "
                + "/".join(f"{v:.1f}%" for v in t["probabilities_pct_exact"].values())
            )
        print(
            "difference in years: "
            + ", ".join(
                f"{q} {('n/a' if v is None else f'{v:+.0f}')}" for q, v in d["quantile_years"].items()
            )
        )
    return 0
