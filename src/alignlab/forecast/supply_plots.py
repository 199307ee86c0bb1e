"""Compute-supply plots (spending, FLOP/$, algorithmic progress, effective compute) and the tornado plot.

The supply rollouts are the same in every maths mode (one seed, common random numbers; the modes differ only
in the requirement), so each supply figure draws them once and the effective-compute figure overlays every
mode's requirement. Every figure carries the run's provenance line in its title and a JSON record beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alignlab.forecast.output import save_figure, write_json
from alignlab.forecast.sensitivity import Sensitivity

BAND = (10, 50, 90)  # percentiles: band edges and the median line
PANELS: dict[str, tuple[str, str]] = {  # file stem -> (Rollouts attribute or "effective", y label)
    "spending": ("spending", "largest training run, log10 $"),
    "flops_per_dollar": ("flops_per_dollar", "log10 FLOP per $"),
    "algorithmic_progress": ("algorithmic", "log10 algorithmic multiplier"),
    "physical_compute": ("physical", "log10 physical FLOP of the largest run"),
    "effective_compute": ("effective", "log10 effective FLOP of the largest run"),
}
MODE_COLOURS = {
    "reference": "tab:red",
    "readme-2023": "tab:red",
    "corrected": "tab:blue",
    "custom": "tab:green",
}


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7.5, 4.8))


def _series(rollouts, attr: str) -> np.ndarray:
    if attr == "physical":
        return rollouts.spending + rollouts.flops_per_dollar
    return getattr(rollouts, attr)  # [n, Y]


def band(x: np.ndarray) -> dict[str, list[float]]:
    """Per-year p10/p50/p90 of an [n, Y] array."""
    q = np.percentile(x, BAND, axis=0)  # [3, Y]
    return {f"p{p}": [float(v) for v in row] for p, row in zip(BAND, q)}


def plot_supply(runs: dict, out: Path, title: str, record: dict) -> list[Path]:
    """One PNG (+ JSON) per supply quantity: median and 10-90% band over the years."""
    first = next(iter(runs.values()))
    years = first.arrival.years
    paths = []
    for stem, (attr, ylabel) in PANELS.items():
        fig, ax = _figure()
        b = band(_series(first.rollouts, attr))
        ax.fill_between(years, b["p10"], b["p90"], color="grey", alpha=0.3, label="10-90% of rollouts")
        ax.plot(years, b["p50"], color="k", label="median rollout (every mode)")
        rec = {"plot": stem, **record, "years": [int(y) for y in years], "band": b}
        if stem == "effective_compute":
            rec["requirements"] = {}
            for mode, run in runs.items():
                r = run.requirements.variant(run.requirement_variant)
                lo, med, hi = (float(v) for v in np.percentile(r, BAND))
                colour = MODE_COLOURS.get(mode, "tab:purple")
                ax.axhspan(lo, hi, color=colour, alpha=0.08)
                ax.axhline(med, color=colour, ls="--", label=f"requirement median, {mode} ({med:.1f})")
                rec["requirements"][mode] = {"p10": lo, "p50": med, "p90": hi}
        ax.set_xlabel("year")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=7, wrap=True)
        ax.legend(fontsize=7, loc="upper left")
        path = out / f"{stem}.png"
        save_figure(fig, path)
        write_json(path.with_suffix(".json"), rec)
        paths.append(path)
    return paths


def plot_tornado(results: list[Sensitivity], path: Path, title: str, record: dict) -> Path:
    """Horizontal bars: median arrival year with each input at the low/high end of its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cap = 2101.0
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 5.5), squeeze=False)
    for ax, res in zip(axes[0], results):
        base = cap if res.baseline_median_year is None else res.baseline_median_year
        rows = res.rows[::-1]  # largest swing on top
        for i, row in enumerate(rows):
            for value, colour in ((row.median_year_low, "tab:blue"), (row.median_year_high, "tab:orange")):
                v = cap if value is None else value
                ax.barh(i, v - base, left=base, color=colour, alpha=0.8)
        ax.axvline(base, color="k", lw=0.8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{r.name} [{r.low:g}, {r.high:g}]" for r in rows], fontsize=7)
        ax.set_xlabel(f"median arrival year ({cap:.0f} = after 2100)")
        ax.set_title(f"{res.mode}: baseline {base:.1f}", fontsize=9)
    fig.suptitle(f"blue: input at its interval's low end, orange: high end\n{title}", fontsize=7, wrap=True)
    fig.tight_layout()
    save_figure(fig, path)
    write_json(
        path.with_suffix(".json"), {"plot": "tornado", **record, "modes": [r.to_dict() for r in results]}
    )
    return path
