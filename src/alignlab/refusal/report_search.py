"""Report pieces for the refusal/KL search: the Pareto table entries, the summary line and two plots
(refusal vs KL over every trial; the chosen ablation weights per layer)."""

from __future__ import annotations

import base64
import io
from typing import Any


def search_summary(search: dict[str, Any] | None) -> dict[str, Any]:
    """``pareto`` (list of {refusal, kl, confirmed}) and ``chosen`` for report.json; {} without a search."""
    if not search:
        return {}
    pareto = [{"trial": p["trial"], "refusal": p["refusal"], "kl": p["kl"], "confirmed": p["confirmed"] is not None,
               "confirmation": p["confirmed"]} for p in search["pareto"]]
    return {"pareto": pareto, "chosen": {**search["chosen"], "params": search["chosen_params"]},
            "search_note": search["note"], "search_trials": len(search["trials"])}


def selected_line(report: dict[str, Any]) -> str:
    """One sentence on what the run applies; a grown subspace adds (or, replacing the pick, is) another."""
    line, sel = _chosen_line(report), report["selected"]
    if "subspace_rank" not in sel:
        return line
    rank = sel["subspace_rank"]
    sub = report["subspace"]
    members = ", ".join(f"(pos {m['position']}, layer {m['layer']})" for m in sel["subspace_members"])
    step, start = sub["steps"][rank - 1], sub["start"]
    tail = (f"harmful-val refusal {step['refused']}/{step['n']} by generation, first-token KL {step['kl']:.3f} "
            f"(the pick alone: {start['refused']}/{start['n']}).")
    if sel.get("subspace_seeded"):
        return f"{line} Grown to a rank-{rank} subspace, ablated fully: + {members}; {tail}"
    return (f"The {report['selection_method']} pick missed --subspace-target on val; applied instead: a rank-{rank} "
            f"subspace grown from nothing, ablated fully: {members}; {tail}")


def _chosen_line(report: dict[str, Any]) -> str:
    sel = report["selected"]
    if report.get("selection_method") == "search":
        ch = report["chosen"]
        lo, hi = ch["wilson95"]
        return (f"Selected by the refusal/KL search: trial {ch['trial']} of {report['search_trials']}, direction "
                f"index {sel['direction_index']:.2f} (layer {sel['layer']}), position {sel['position']}; harmful-val "
                f"refusal {ch['refusal']:.2f} [{lo:.2f}, {hi:.2f}] by generation, first-token KL {ch['kl']:.3f}.")
    if report.get("selection_method") == "cosmic":
        return (f"Selected direction (COSMIC, activation cosines only): layer {sel['layer']}, position "
                f"{sel['position']} (S_comply {sel['cosmic_comply']:.3f}, S_refuse {sel['cosmic_refuse']:.3f}).")
    return (f"Selected direction (RD): layer {sel['layer']}, position {sel['position']} (bypass {sel['bypass']:.2f}, "
            f"induce {sel['induce']:.2f}, KL {sel['kl']:.3f}).")


def png(fig: Any) -> str:
    """A matplotlib figure as base64 PNG for an inline <img> (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _pareto_plot(search: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    trials = search["trials"]
    ax.scatter([t["kl"] for t in trials], [t["refusal"] for t in trials], color="0.75", s=14, label="trial")
    front = sorted(search["pareto"], key=lambda p: p["kl"])
    ax.plot([p["kl"] for p in front], [p["refusal"] for p in front], "o-", color="tab:blue", ms=4,
            label="Pareto front (few-token check)")
    confirmed = [p for p in front if p["confirmed"]]
    ax.scatter([p["kl"] for p in confirmed], [p["confirmed"]["refusal"] for p in confirmed], marker="s",
               color="tab:orange", zorder=3, label="confirmed by generation")
    first = next((t for t in trials if t["number"] == min(x["number"] for x in trials)), None)
    if first is not None:
        ax.scatter([first["kl"]], [first["refusal"]], marker="D", color="tab:green", zorder=3,
                   label="RD direction, full ablation")
    ch = search["chosen"]
    ax.scatter([ch["kl"]], [ch["refusal"]], marker="*", s=220, color="red", zorder=4, label="chosen")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("first-token KL on harmless val")
    ax.set_ylabel("refusal rate on harmful val")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=8)
    return png(fig)


def _weights_plot(search: dict[str, Any], n_layers: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alignlab.refusal.search_space import decode

    point = decode(search["chosen_params"], n_layers, search["rd_best"]["layer"])
    fig, ax = plt.subplots(figsize=(7, 3), constrained_layout=True)
    ax.plot(range(n_layers), point.weights.attn, "o-", label="attention write")
    ax.plot(range(n_layers), point.weights.mlp, "s-", label="MLP write")
    ax.axhline(point.weights.embed, color="0.5", ls=":", label=f"embedding ({point.weights.embed:.2f})")
    ax.axvline(point.direction_index, color="red", ls="--", label=f"direction index {point.direction_index:.2f}")
    ax.set_xlabel("layer")
    ax.set_ylabel("ablation weight")
    ax.set_ylim(-0.03, 1.05)
    ax.legend(fontsize=8)
    return png(fig)


def search_images(search: dict[str, Any], _selection: dict[str, Any]) -> list[tuple[str, str]]:
    n_layers = search["n_layers"]
    return [("Refusal vs KL: every trial, the Pareto front and the chosen point", _pareto_plot(search)),
            ("Chosen ablation weights per layer", _weights_plot(search, n_layers))]
