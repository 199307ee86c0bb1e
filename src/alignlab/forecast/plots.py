"""Plots of spec §10; every figure shows `reference` and `corrected` side by side and gets a JSON record."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alignlab.forecast.kperf import k_constant
from alignlab.forecast.modes import Maths
from alignlab.forecast.output import save_figure, write_json
from alignlab.forecast.requirements import RequirementSamples
from alignlab.forecast.scaling import ScalingLaw, kl_at_compute
from alignlab.forecast.timeline import Arrival

# Task horizons for orientation (report Fig. 1 via Schmitz), tokens.
HORIZONS: dict[str, float] = {"tweet": 1e2, "short blog post": 1e3, "scientific manuscript": 1e4, "book": 1e5}
SLOWDOWNS: tuple[float, ...] = (1.0, 10.0, 53.4)
STYLE = {"reference": "--", "readme-2023": "--", "gfix": "-.", "corrected": "-", "custom": ":"}


def _save(fig, path: Path, record: dict) -> Path:
    save_figure(fig, path)
    write_json(path.with_suffix(".json"), record)
    return path


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4.5))


def plot_kl_vs_compute(laws: list[ScalingLaw], modes: list[Maths], path: Path) -> Path:
    """Per-token KL (nats) against training compute under each mode's allocation constant."""
    fig, ax = _figure()
    c = np.logspace(18, 40, 200)  # [200] FLOP
    for law in laws:
        for m in modes:
            ax.loglog(
                c,
                kl_at_compute(c, law, m.g_formula),
                STYLE.get(m.name, ":"),
                label=f"{law.name}, {m.name} (G {m.g_formula})",
            )
    ax.set_xlabel("training compute (FLOP)")
    ax.set_ylabel("reducible loss = KL (nats/token)")
    ax.set_title("KL vs compute (compute-optimal allocation)")
    ax.legend(fontsize=7)
    return _save(
        fig,
        path,
        {
            "plot": "kl_vs_compute",
            "params": [law.name for law in laws],
            "modes": [m.describe() for m in modes],
        },
    )


def plot_k_vs_compute(law: ScalingLaw, modes: list[Maths], path: Path) -> Path:
    """k-performance against compute for s in {1, 10, 53.4}, both modes, with task horizons marked."""
    fig, ax = _figure()
    c = np.logspace(18, 52, 200)
    colours = ("tab:blue", "tab:orange", "tab:green")
    for colour, s in zip(colours, SLOWDOWNS):
        for m in modes:
            k = (
                k_constant(m.confidence, m.k_units, m.criterion, m.liu_r)
                * s
                / kl_at_compute(c, law, m.g_formula)
            )
            ax.loglog(c, k, STYLE.get(m.name, ":"), color=colour, label=f"s = {s:g}, {m.name}")
    for name, k in HORIZONS.items():
        ax.axhline(k, color="grey", lw=0.6)
        ax.text(c[0], k * 1.15, name, fontsize=7, color="grey")
    ax.set_xlabel("training compute (FLOP)")
    ax.set_ylabel("k-performance (tokens)")
    ax.set_title(f"k vs compute, {law.name} (c = {modes[0].confidence})")
    ax.legend(fontsize=7)
    return _save(
        fig,
        path,
        {
            "plot": "k_vs_compute",
            "params": law.name,
            "slowdowns": list(SLOWDOWNS),
            "horizons": HORIZONS,
            "modes": [m.describe() for m in modes],
        },
    )


def plot_requirements(
    reqs: dict[str, RequirementSamples], path: Path, title: str | None = None, record: dict | None = None
) -> Path:
    """Empirical CDFs of raw, updated and updated+scaled requirements for each mode."""
    fig, ax = _figure()
    colours = {"raw": "tab:blue", "updated": "tab:orange", "updated_scaled": "tab:green"}
    for mode, req in reqs.items():
        for variant, colour in colours.items():
            x = np.sort(req.variant(variant))
            ax.plot(
                x,
                np.arange(1, x.size + 1) / x.size,
                STYLE.get(mode, ":"),
                color=colour,
                label=f"{variant}, {mode}",
            )
    ax.set_xlim(15, 60)
    ax.set_xlabel("log10 effective FLOP required")
    ax.set_ylabel("CDF")
    first = next(iter(reqs.values()))
    if title:
        ax.set_title(f"TAI compute requirement\n{title}", fontsize=7)
    else:
        ax.set_title(f"TAI compute requirement, {first.params}, seed {first.seed}, {first.samples} samples")
    ax.legend(fontsize=7)
    return _save(
        fig,
        path,
        {"plot": "requirements", **(record or {}), "runs": {m: r.summary() for m, r in reqs.items()}},
    )


def plot_arrival(
    arrivals: dict[str, Arrival], path: Path, readme: dict[str, int] | None = None, record: dict | None = None
) -> Path:
    """P(TAI by year) per mode (exceedance and first passage), README points overlaid."""
    fig, ax = _figure()
    for mode, arr in arrivals.items():
        ax.plot(arr.years, arr.p_exceed, STYLE.get(mode, ":"), label=f"P_n (as coded), {mode}")
        ax.plot(arr.years, arr.p_first, STYLE.get(mode, ":"), lw=0.8, label=f"first passage, {mode}")
    if readme:
        ax.scatter(
            [int(y) for y in readme],
            [v / 100 for v in readme.values()],
            color="k",
            zorder=5,
            label="reference README (2023-08-23)",
        )
    ax.set_xlabel("year")
    ax.set_ylabel("P(TAI by year)")
    ax.set_ylim(0, 1)
    line = (record or {}).get("provenance_line", f"preset {(record or {}).get('preset', '?')}")
    ax.set_title(f"Arrival-year CDF\n{line}", fontsize=7)
    ax.legend(fontsize=7)
    return _save(fig, path, {"plot": "arrival_cdf", **(record or {})})
