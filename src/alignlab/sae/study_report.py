"""``study.html``: one self-contained page (inline base64 PNG plots, no external references) and the
question -> measured answer table as markdown for the README."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from alignlab.io import write_text_atomic


def answers_markdown(study: dict[str, Any]) -> str:
    """The question -> measured answer table (markdown)."""
    rows = ["| question | measured answer |", "|---|---|"]
    for qa in study["answers"]:
        rows.append(f"| {qa['question']} | {qa['answer'].replace('|', '/')} |")
    return "\n".join(rows)


def _png(fig: Any) -> str:
    """A matplotlib figure as base64 PNG text (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _curve(ax: Any, pts: list[dict[str, Any]], key: str, label: str, style: str = "-o") -> None:
    pts = sorted((p for p in pts if p.get(key) is not None and p.get("l0", 0) > 0), key=lambda p: p["l0"])
    if pts:
        ax.plot([p["l0"] for p in pts], [p[key] for p in pts], style, label=label, markersize=4)


def _frontier_fig(
    curves: dict[str, list[dict[str, Any]]], key: str, title: str, dashed: dict | None = None
) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arch, pts in curves.items():
        _curve(ax, pts, key, arch)
    for arch, pts in (dashed or {}).items():
        _curve(ax, pts, key, f"{arch} (default lr)", "--x")
    ax.set_xscale("log")
    ax.set_xlabel("L0 (held-out)")
    ax.set_ylabel({"fvu": "FVU (lower is better)", "ce": "CE loss recovered (higher is better)"}[key])
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def _width_fig(width: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for arch, rows in width.get("table", {}).items():
        ws = sorted(int(w) for w in rows)
        axes[0].plot(ws, [rows[str(w)]["fvu"] for w in ws], "-o", label=arch)
        axes[1].plot(ws, [rows[str(w)]["dead_frac"] for w in ws], "-o", label=f"{arch} dead")
        axes[1].plot(ws, [rows[str(w)]["dense_frac"] for w in ws], "--x", label=f"{arch} dense")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width (x d_model)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"FVU at L0 {width.get('l0', 0):.1f}")
    axes[1].set_ylabel("fraction of latents")
    return _png(fig)


def _stability_fig(runs: list[dict[str, Any]]) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for r in runs:
        for ax, key in zip(axes, ("grad_norm_trace", "loss_trace")):
            ys = [v if v is not None else float("nan") for v in r[key]]
            ax.plot(range(1, len(ys) + 1), ys, label=r["name"], linewidth=1)
    for ax, label in zip(axes, ("gradient norm before clipping", "training loss")):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def _probe_fig(probe: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arch, r in probe["saes"].items():
        ks = sorted(int(k) for k in r["mean_acc"])
        ax.plot(
            ks, [r["mean_acc"][str(k)] for k in ks], "-o", label=f"{arch} (L0 {r['l0']:.0f})", markersize=4
        )
    ax.axhline(probe["dense_mean"], color="black", linestyle=":", label="dense probe (raw activations)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k latents")
    ax.set_ylabel("mean test accuracy over tasks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def _figures(study: dict[str, Any]) -> list[tuple[str, str]]:
    best, default = study["frontier_best_lr"], study["frontier_default_lr"]
    archs = study["config"]["archs"]
    qa = {a["id"]: a for a in study["answers"]}
    figs = [
        (
            "Frontiers, L0 vs FVU (each architecture at its best lr)",
            _frontier_fig({a: best[a] for a in archs if a in best}, "fvu", "frontier"),
        )
    ]
    if study.get("ce_measured"):
        figs.append(
            (
                "Frontiers, L0 vs CE loss recovered",
                _frontier_fig({a: best[a] for a in archs if a in best}, "ce", "frontier"),
            )
        )
    pair = [a for a in ("standard", "gated") if a in best]
    figs.append(
        (
            "With vs without the lr sweep (solid: best lr; dashed: the one default lr)",
            _frontier_fig(
                {a: best[a] for a in pair}, "fvu", "lr sweep", {a: default[a] for a in pair if a in default}
            ),
        )
    )
    abl = [
        a
        for a in ("standard", "gated", "gated_no_bmag", "gated_untied_mag", "gated_no_aux", "rescale_shift")
        if a in best
    ]
    figs.append(
        (
            "Gated ablations and baseline + rescale & shift, L0 vs FVU",
            _frontier_fig({a: best[a] for a in abl}, "fvu", "ablations"),
        )
    )
    if study.get("ce_measured"):
        figs.append(
            (
                "Gated ablations, L0 vs CE loss recovered",
                _frontier_fig({a: best[a] for a in abl}, "ce", "ablations"),
            )
        )
    figs.append(
        ("Width at matched L0: FVU (left), dead and dense latent fractions (right)", _width_fig(qa["width"]))
    )
    if study.get("stability"):
        figs.append(("L_p stability: gradient norm and loss per step", _stability_fig(study["stability"])))
    if study.get("probing"):
        figs.append(
            ("Sparse probing on Python token classes (tokenize labels)", _probe_fig(study["probing"]))
        )
    return figs


def _points_table(study: dict[str, Any]) -> str:
    head = ("SAE", "L0", "FVU", "CE rec.", "dead", "dense", "gamma")
    seen, rows = set(), []
    for group in (study["frontier_best_lr"], study["frontier_default_lr"]):
        for pts in group.values():
            for p in pts:
                if p["name"] in seen:
                    continue
                seen.add(p["name"])
                vals = (
                    p["name"],
                    f"{p['l0']:.1f}",
                    f"{p['fvu']:.4f}",
                    "-" if p["ce"] is None else f"{p['ce']:.3f}",
                    f"{p['dead_frac']:.3f}",
                    f"{p['dense_frac']:.3f}",
                    "-" if p["shrinkage_gamma"] is None else f"{p['shrinkage_gamma']:.3f}",
                )
                rows.append("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in vals) + "</tr>")
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def write_report(path: Path, study: dict[str, Any]) -> None:
    """Write the self-contained HTML report of ``study`` (matplotlib Agg; every plot inline)."""
    import matplotlib

    matplotlib.use("Agg")
    qa_rows = "".join(
        f"<tr><td>{html.escape(a['question'])}</td><td>{html.escape(a['answer'])}</td></tr>"
        for a in study["answers"]
    )
    figs = "".join(
        f"<figure><img alt='{html.escape(cap)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(cap)}</figcaption></figure>"
        for cap, data in _figures(study)
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in study.get("notes", []))
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in study.get("timings_s", {}).items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>alignlab sae study</title><style>
body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;vertical-align:top}} figure{{margin:1.5em 0}} img{{max-width:100%}}
</style></head><body><h1>SAE study: {html.escape(str(study.get("model")))} {html.escape(str(study.get("hook")))}</h1>
<p>d_model {study["d_model"]}, {study["train_rows"]:,} training rows, {study["heldout_rows"]:,} held-out rows, input
scale {study["input_scale"]:.4g}. Best lr per architecture: {html.escape(str(study["best_lr"]))}.
Wall time of this run: {html.escape(timings)}.</p><ul>{notes}</ul>
<h2>Questions and measured answers</h2><table><tr><th>question</th><th>measured answer</th></tr>{qa_rows}</table>
<h2>Plots</h2>{figs}<h2>Frontier points</h2>{_points_table(study)}</body></html>"""
    write_text_atomic(path, page)
