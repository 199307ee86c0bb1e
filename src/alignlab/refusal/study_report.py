"""study.json, study.md and a self-contained study.html (tables as HTML, plots inline as base64 PNG)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from alignlab.io import write_json_atomic, write_text_atomic
from alignlab.refusal.report_html import markdown_html
from alignlab.refusal.report_search import png


def _rate(e: dict[str, Any]) -> str:
    lo, hi = e["wilson95"]
    return f"{e['rate']:.2f} [{lo:.2f}, {hi:.2f}] ({e['k']}/{e['n']})"


def _num(x: Any, fmt: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _versus(claim: dict[str, Any], name: str) -> str:
    """What the paired comparison with the claimed winner found for condition ``name``."""
    if name == claim["winner"]:
        return "claimed winner"
    if name == "edited" and "tests" in claim:  # claim 5: two-sided equivalence tests
        return ", ".join(
            f"{m} p={t['p']:.2g}" + (" (differs)" if t["differs"] else "") for m, t in claim["tests"].items()
        )
    comp = next((c for c in claim.get("comparisons", []) if c["other"] == name), None)
    if comp is None:
        return "reference" if name == "base" else "-"
    ps = ", ".join(f"{m} p={t['p']:.2g}" for m, t in comp["tests"].items())
    who = {"winner": "winner better", "other": "**this better**", "none": comp["decided_by"]}[comp["result"]]
    return f"{who} ({comp['decided_by']}; {ps})" if comp["result"] != "none" else f"{who} ({ps})"


def claim_table(claim: dict[str, Any]) -> list[str]:
    rows = [
        "| condition | harmful refusal [Wilson 95 %] | degenerate | KL (harmless) | CE (harmless) | vs winner |",
        "|---|---|---|---|---|---|",
    ]
    for c in claim["conditions"]:
        label = c["label"] + (
            " (required)" if c["name"] in claim.get("required", []) and claim.get("comparisons") else ""
        )
        rows.append(
            f"| {label} | {_rate(c['refusal'])} | {_rate(c['degenerate'])} | {_num(c['kl'])} | "
            f"{_num(c['ce'])} | {_versus(claim, c['name'])} |"
        )
    rows.append(f"| **verdict** | **{claim['verdict']}** | {claim['reason']} | | | |".replace("\n", " "))
    return rows


def summary_table(study: dict[str, Any]) -> list[str]:
    rows = ["| model | claim | verdict | reason |", "|---|---|---|---|"]
    for slug, m in study["models"].items():
        for claim in m["claims"].values():
            rows.append(f"| {slug} | {claim['title']} | **{claim['verdict']}** | {claim['reason']} |")
    mm = study["many_models"]
    rows.append(f"| all | {mm['title']} | **{mm['verdict']}** | {mm['reason']} |")
    return rows


def study_markdown(study: dict[str, Any]) -> str:
    md = [
        "# alignlab refusal study",
        "",
        "Claims of the source thread, measured on the same held-out prompts. Verdicts are computed from Wilson "
        "95 % intervals and paired exact tests (`refusal/study_verdict.py`), never written by hand.",
        "",
        *summary_table(study),
        "",
    ]
    for slug, m in study["models"].items():
        sel = m["selected"]
        md += [
            f"## {slug}",
            "",
            f"Instruction direction: layer {sel['layer']} of {m['n_layers']}, position {sel['position']} "
            f"({sel['rule']}); {m['n_harmful_test']} harmful / {m['n_harmless_test']} harmless held-out test "
            f"prompts; {study['config']['study']['max_new_tokens']} new tokens, judge "
            f"`{study['config']['study']['judge']}`; study wall time {m['wall_s']:.0f} s.",
            "",
        ]
        for claim in m["claims"].values():
            md += [f"### {claim['title']}", "", claim["claim"], "", *claim_table(claim), ""]
            if "cosines" in claim:
                cos = "; ".join(
                    f"{group}: " + ", ".join(f"{k} {v:.2f}" for k, v in vals.items())
                    for group, vals in claim["cosines"].items()
                )
                md += [f"Cosine similarities — {cos}.", ""]
            if "gap" in claim:
                g = claim["gap"]
                md += [
                    f"Measured gap: max |Δlogit| {g['max_abs_logit_diff']:.2e}, max |Δp| first token "
                    f"{g['max_abs_prob_diff']:.2e} (exact family: {g.get('exact_equivalence')}); identical "
                    f"responses {claim['identical_responses']}/{claim['n']}.",
                    "",
                ]
    md += [f"Total wall time {study['wall_s']:.0f} s.", ""]
    return "\n".join(md)


def _sweep_plot(m: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True, sharey=True)
    styles = {
        "subtract_layer": ("o-", "tab:blue", "subtract c·r, selected layer"),
        "subtract_all": ("s-", "tab:orange", "subtract c·r, every layer"),
    }
    marks = {
        "base": ("o", "0.4", "base"),
        "ablate_all": ("*", "red", "ablation, every layer"),
        "ablate_layer": ("D", "tab:green", "ablation, selected layer"),
        "edited": ("x", "black", "weight edit"),
    }
    for ax, metric, text in zip(
        axes,
        ("kl", "ce", "degenerate"),
        ("first-token KL (harmless)", "CE on base harmless completions", "degenerate rate (harmful)"),
    ):
        for kind, line in m["sweep"]["lines"].items():
            style, color, label = styles[kind]
            ax.plot(
                [p[metric] for p in line], [p["refusal"] for p in line], style, color=color, label=label, ms=5
            )
            for p in line:
                ax.annotate(
                    f"{p['coeff']:g}",
                    (p[metric], p["refusal"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        for p in m["sweep"]["points"]:
            marker, color, label = marks[p["name"]]
            ax.scatter(
                [p[metric]],
                [p["refusal"]],
                marker=marker,
                color=color,
                s=110 if marker == "*" else 45,
                zorder=3,
                label=label,
            )
        if metric == "kl":
            ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlabel(text)
        ax.set_ylim(-0.03, 1.03)
    axes[0].set_ylabel("harmful refusal rate")
    axes[0].legend(fontsize=7)
    return png(fig)


def _rates_plot(m: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = list(m["conditions"].values())
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(conds) + 1), constrained_layout=True)
    ys = range(len(conds))
    rates = [c["refusal"]["rate"] for c in conds]
    lo = [c["refusal"]["rate"] - c["refusal"]["wilson95"][0] for c in conds]
    hi = [c["refusal"]["wilson95"][1] - c["refusal"]["rate"] for c in conds]
    ax.errorbar(rates, list(ys), xerr=[lo, hi], fmt="o", capsize=3)
    ax.set_yticks(list(ys), [c["label"] for c in conds], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(-0.03, 1.03)
    ax.set_xlabel("harmful refusal rate (Wilson 95 %)")
    return png(fig)


def _samples(m: dict[str, Any]) -> str:
    rows = []
    for name in ("base", "ablate_all", "src_responses", "subtract_layer@1", "edited"):
        for s in m["samples"].get(name, [])[:2]:
            rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{html.escape(s['prompt'])}</td>"
                f"<td>{html.escape(s['response'][:300])}</td></tr>"
            )
    return "<table><tr><th>condition</th><th>prompt</th><th>response</th></tr>" + "".join(rows) + "</table>"


def study_html(study: dict[str, Any], md: str) -> str:
    parts = [markdown_html(md)]
    for slug, m in study["models"].items():
        parts.append(
            f"<h2>{html.escape(slug)}: projection vs magnitude sweep</h2>"
            f"<img alt='sweep' src='data:image/png;base64,{_sweep_plot(m)}'/>"
        )
        parts.append(
            f"<h2>{html.escape(slug)}: refusal per condition</h2>"
            f"<img alt='rates' src='data:image/png;base64,{_rates_plot(m)}'/>"
        )
        parts.append(f"<h2>{html.escape(slug)}: sample responses (harmful test)</h2>{_samples(m)}")
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>alignlab refusal study</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


def write_study(out: Path, study: dict[str, Any]) -> None:
    write_json_atomic(out / "study.json", study)
    md = study_markdown(study)
    write_text_atomic(out / "study.md", md)
    write_text_atomic(out / "study.html", study_html(study, md))
