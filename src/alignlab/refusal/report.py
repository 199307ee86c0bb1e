"""The run's report: report.json (machine-readable), report.md and a self-contained report.html
(plots inline as base64 PNG): selection heat-maps, cosine similarity of candidates across layers,
refusal rates with Wilson intervals, sample completions before and after."""

from __future__ import annotations

import html
import math
import platform
from typing import Any

from alignlab import __version__
from alignlab.io import write_json_atomic, write_text_atomic
from alignlab.refusal.report_html import markdown_html
from alignlab.refusal.report_search import png as _png
from alignlab.refusal.report_search import search_images, search_summary, selected_line

CONDITIONS = ("base", "ablated", "edited", "added")


def _heatmaps(selection: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(3, 1, figsize=(10, 7), constrained_layout=True)
    n_pos = selection["n_pos"]
    for ax, metric in zip(axes, ("bypass", "induce", "kl")):
        grid = np.array(selection["grids"][metric], dtype=float)
        im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        note = "; induce is not screened where KL > 2 kl_max" if metric == "induce" else ""
        ax.set_title(f"{metric} (position x layer; blank = pruned/not scored{note})")
        ax.set_yticks(range(n_pos), [str(p - n_pos) for p in range(n_pos)])
        ax.set_xlabel("layer")
        fig.colorbar(im, ax=ax)
        ch = selection["chosen"] or selection["best_bypass"]
        ax.scatter([ch["layer"]], [ch["position"] + n_pos], marker="*", color="red", s=120)
    return _png(fig)


def _cosine(directions: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.2), constrained_layout=True)
    im = ax.imshow(directions["layer_cosine"], cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_title("cosine of last-position candidates across layers")
    ax.set_xlabel("layer")
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax)
    return _png(fig)


def _rates(summary: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), constrained_layout=True)
    width = 0.38
    for j, split in enumerate(("harmful", "harmless")):
        xs, ys, lo, hi = [], [], [], []
        for i, cond in enumerate(c for c in CONDITIONS if c in summary):
            entry = summary[cond].get(split)
            if entry is None:
                continue
            xs.append(i + (j - 0.5) * width)
            ys.append(entry["rate"])
            lo.append(entry["rate"] - entry["wilson95"][0])
            hi.append(entry["wilson95"][1] - entry["rate"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=split)
    ax.set_xticks(range(len(CONDITIONS)), CONDITIONS)
    ax.set_ylabel("refusal rate (Wilson 95%)")
    ax.set_ylim(0, 1.05)
    ax.legend()
    return _png(fig)


def build_report(state: Any, chosen: Any, evaluation: dict[str, Any], export: dict | None) -> dict[str, Any]:
    import torch
    import transformers

    edit = state.results.get("edit", {})
    return {
        "schema": 1,
        "alignlab_version": __version__,
        "model": state.cfg.model,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "transformers": transformers.__version__, "device": str(state.lm.device),
                        "dtype": str(state.lm.dtype)},
        "template": {"hash": state.fmt.template_hash, "source": state.fmt.template_source,
                     "eoi": state.fmt.eoi_text, "n_eoi": state.fmt.n_eoi},
        "refusal_tokens": state.results.get("tokens", {}),
        "selection_method": chosen.method,
        "selected": chosen.describe(),
        "selection": {k: state.results["select"][k] for k in ("baseline", "forwards", "generates", "relaxed")
                      if k in state.results["select"]},
        "massive_dims": state.results.get("massive_dims", []),
        "subspace": {k: v for k, v in state.results["subspace"].items() if k != "key"}
        if "subspace" in state.results else None,
        **search_summary(state.results.get("search") if chosen.method == "search" else None),
        "refusal_rate": evaluation["refusal_rate"],
        "refusal_rate_opening_judge": evaluation.get("opening_judge", {}),
        "rates": evaluation["summary"],
        "kl_harmless": evaluation["kl_harmless"],
        "ce_harmless": evaluation["ce_harmless"],
        "edited_generation": evaluation.get("edited_generation"),
        "edit_max_abs_logit_diff": edit.get("edit_max_abs_logit_diff"),
        "exact_equivalence": edit.get("exact_equivalence"),
        "edit": edit,
        "export": export,
        "garak": state.results.get("data", {}).get("garak", {}),
        "timings_s": dict(state.timings),
        "reused_stages": sorted(state.reused),
    }


def _timings_text(report: dict[str, Any]) -> str:
    """``stage seconds`` per stage; a stage reused from an earlier run says so (its time is that run's)."""
    reused = set(report.get("reused_stages", []))
    return ", ".join(f"{k} {v:.1f}" + (" (reused)" if k in reused else "") for k, v in report["timings_s"].items())


def _rate_table(report: dict[str, Any]) -> str:
    lines = ["| condition | harmful refusal | harmless refusal | KL (harmless) | CE (harmless) |",
             "|---|---|---|---|---|"]
    for cond in CONDITIONS:
        rates = report["rates"].get(cond, {})
        cells = []
        for split in ("harmful", "harmless"):
            e = rates.get(split)
            cells.append("-" if e is None else f"{e['rate']:.2f} [{e['wilson95'][0]:.2f}, {e['wilson95'][1]:.2f}] "
                                               f"({e['k']}/{e['n']})")
        kl = report["kl_harmless"].get(cond)
        ce = report["ce_harmless"].get(cond)
        cells.append("-" if kl is None else f"{kl:.3f}")
        cells.append("-" if ce is None or (isinstance(ce, float) and math.isnan(ce)) else f"{ce:.3f}")
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _subspace_table(report: dict[str, Any]) -> list[str]:
    """The subspace stage's steps (markdown lines, ending in a blank line); none when it did not run."""
    sub = report.get("subspace")
    if not sub or len(sub["steps"]) < (2 if sub.get("seeded") else 1):  # nothing grown
        return []
    lines = ["## Subspace growth (harmful val; each row a fully ablated subspace)", "",
             "| rank | added (position, layer) | refusal score | first-token KL | val refusal | degenerate |",
             "|---|---|---|---|---|---|"]
    for s in sub["steps"]:
        added = "chosen" if s["added"] is None else f"({s['added']['position']}, {s['added']['layer']})"
        score = "-" if "bypass" not in s else f"{s['bypass']:.2f}"
        kl = "-" if "kl" not in s else f"{s['kl']:.3f}"
        lines.append(f"| {s['rank']} | {added} | {score} | {kl} | {s['refused']}/{s['n']} | {s['degenerate']:.2f} |")
    return [*lines, "", f"Picked rank {sub['picked_rank']}.", ""]


def write_report(state: Any, chosen: Any, evaluation: dict[str, Any], export: dict | None) -> dict[str, Any]:
    report = build_report(state, chosen, evaluation, export)
    write_json_atomic(state.run.file("report.json"), report)
    md = [f"# alignlab refusal report — {report['model']}", "", selected_line(report),
          f"Weight edit exact: {report['exact_equivalence']}; max |Δlogit| edited vs hooked: "
          f"{report['edit_max_abs_logit_diff']:.2e}.", "", _rate_table(report), "",
          *_subspace_table(report), "Timings (s): " + _timings_text(report)]
    write_text_atomic(state.run.file("report.md"), "\n".join(md) + "\n")
    write_text_atomic(state.run.file("report.html"), _html(state, report, evaluation, "\n".join(md)))
    return report


def _samples_html(evaluation: dict[str, Any], n: int = 6) -> str:
    rows = []
    base, ablated = evaluation["samples"].get("base/harmful", []), evaluation["samples"].get("ablated/harmful", [])
    for b, a in list(zip(base, ablated))[:n]:
        rows.append(f"<tr><td>{html.escape(b['prompt'])}</td><td>{html.escape(b['response'][:300])}</td>"
                    f"<td>{html.escape(a['response'][:300])}</td></tr>")
    harmless, added = evaluation["samples"].get("base/harmless", []), evaluation["samples"].get("added/harmless", [])
    for b, a in list(zip(harmless, added))[:n]:
        rows.append(f"<tr><td>{html.escape(b['prompt'])}</td><td>{html.escape(b['response'][:300])}</td>"
                    f"<td>{html.escape(a['response'][:300])}</td></tr>")
    return ("<table><tr><th>prompt</th><th>base</th><th>ablated (harmful) / added (harmless)</th></tr>"
            + "".join(rows) + "</table>")


def _html(state: Any, report: dict[str, Any], evaluation: dict[str, Any], md: str) -> str:
    directions = state.run.load_json("directions.json", state.keys["extract"]) or {}
    images = [("Refusal rates", _rates(report["rates"]))]
    if "grids" in state.results["select"]:
        images.insert(0, ("Selection sweep", _heatmaps(state.results["select"])))
    if report.get("selection_method") == "search":
        images[:0] = search_images(state.results["search"], state.results["select"])
    if "layer_cosine" in directions:
        images.insert(1, ("Candidate directions across layers", _cosine(directions)))
    figs = "".join(f"<h2>{t}</h2><img src='data:image/png;base64,{b}'/>" for t, b in images)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>alignlab refusal report</title>"
            f"<style>{style}</style></head><body>{markdown_html(md)}{figs}"
            f"<h2>Sample completions</h2>{_samples_html(evaluation)}</body></html>")
