"""The calculator's two plots (spec §5): calc_headroom.png and calc_heatmap.png."""

from __future__ import annotations

from pathlib import Path

from alignlab.exfil.calc import headroom_days
from alignlab.io import atomic_path

WEIGHTS_TB = (0.1, 1.0, 2.0, 10.0)
"""Weight sizes drawn in calc_headroom.png (spec §5)."""
COMPRESSIONS = (1.0, 1 / 16, 1 / 100)
"""Attacker compressions r_w drawn (Brown et al., arXiv:2601.01296)."""


def plot_headroom(path: str | Path) -> Path:
    """T (days) against the attacker channel (bytes/day), log-log, one line per (W, r_w)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    channel = np.logspace(6, 13, 200)  # 1 MB/day … 10 TB/day
    fig, ax = plt.subplots(figsize=(7.5, 5))
    styles = {1.0: "-", 1 / 16: "--", 1 / 100: ":"}
    for i, w_tb in enumerate(WEIGHTS_TB):
        for r_w in COMPRESSIONS:
            label = f"W={w_tb:g} TB, r_w=1/{round(1 / r_w)}" if r_w < 1 else f"W={w_tb:g} TB, raw"
            ax.loglog(channel, headroom_days(w_tb * 1e12, channel, r_w), styles[r_w], color=f"C{i}", label=label)
    for days, name in ((1, "1 day"), (30.44, "1 month"), (365.25, "1 year")):
        ax.axhline(days, color="grey", lw=0.6)
        ax.text(channel[0], days * 1.1, name, fontsize=7, color="grey")
    ax.set_xlabel("attacker channel U − L_legit (bytes/day)")
    ax.set_ylabel("time to exfiltrate T (days)")
    ax.set_title("T = W·r_w / channel")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(True, which="both", alpha=0.2)
    return _save(fig, path)


def plot_heatmap(path: str | Path, weights_bytes: float = 1e12, headroom: float = 0.1,
                 bytes_per_token: float = 4.0, weight_compression: float = 1.0) -> Path:
    """log10 T over (legitimate output tokens/day) × ρ_d at fixed W and h (channel = h·L_legit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tokens = np.logspace(8, 14, 61)  # tokens/day
    rho = np.logspace(-4, 0, 41)  # ρ_d: 1e-4 … 1 (2604.02343 reports 0.0006 … 1)
    tt, rr = np.meshgrid(tokens, rho)  # [n_rho, n_tokens]
    days = headroom_days(weights_bytes, headroom * tt * bytes_per_token * rr, weight_compression)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    mesh = ax.pcolormesh(tt, rr, np.log10(days), shading="auto", cmap="viridis")
    cs = ax.contour(tt, rr, days, levels=[1, 30.44, 365.25, 3652.5], colors="white", linewidths=0.8)
    ax.clabel(cs, fmt={1: "1 d", 30.44: "1 mo", 365.25: "1 y", 3652.5: "10 y"}, fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("legitimate output tokens/day")
    ax.set_ylabel("defender compression ρ_d")
    ax.set_title(f"log10 T (days); W={weights_bytes / 1e12:g} TB, h={headroom:g}, {bytes_per_token:g} B/token")
    fig.colorbar(mesh, ax=ax, label="log10 days")
    return _save(fig, path)


def write_plots(directory: str | Path) -> list[Path]:
    """Both plots plus ``calc_plots.json`` recording what they show (provenance)."""
    from alignlab.io import write_json_atomic

    d = Path(directory)
    paths = [plot_headroom(d / "calc_headroom.png"), plot_heatmap(d / "calc_heatmap.png")]
    write_json_atomic(d / "calc_plots.json", {
        "calc_headroom.png": {"weights_tb": list(WEIGHTS_TB), "weight_compression": list(COMPRESSIONS),
                              "channel_bytes_per_day": [1e6, 1e13]},
        "calc_heatmap.png": {"weights_bytes": 1e12, "headroom": 0.1, "bytes_per_token": 4.0,
                             "tokens_per_day": [1e8, 1e14], "defender_compression": [1e-4, 1.0]},
        "formula": "T = W * r_w / channel (spec upload-limits.md section 5)",
    })
    return paths


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return target
