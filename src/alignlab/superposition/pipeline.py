"""Run an experiment and write its artifacts: metrics.json, CSVs, PNGs, summary.txt and the HTML page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignlab.io import write_bytes_atomic, write_json_atomic, write_text_atomic
from alignlab.superposition import plots
from alignlab.superposition.artifacts import provenance, write_csv, write_report
from alignlab.superposition.config import TMSConfig
from alignlab.superposition.metrics import feature_norms, interference


@dataclass(frozen=True)
class Saved:
    """What a command wrote."""

    out: Path
    metrics: dict
    summary: str


def _finish(out: Path, metrics: dict, summary: str, report_root: Path | None) -> Saved:
    """Write metrics.json, summary.txt and out/report.html; also rebuild report_root/report.html if given."""
    write_json_atomic(out / "metrics.json", metrics)
    write_text_atomic(out / "summary.txt", summary + "\n")
    write_report(out)
    if report_root is not None:
        write_report(report_root)
    return Saved(out=out, metrics=metrics, summary=summary)


def _loss_block(run) -> dict:
    return {"final_train_loss": run.loss_history[-1].tolist(), "held_out_loss": run.held_out_loss.tolist(),
            "chosen_restart": run.chosen.tolist(), "restart_seeds": run.restart_seeds}


def save_intro(cfg: TMSConfig, result, out: Path, backend: str, restarts: int,
               report_root: Path | None = None) -> Saved:
    from alignlab.superposition.intro import intro_json, intro_table

    out = Path(out)
    levels = intro_json(result)
    metrics = {"experiment": "intro", "provenance": provenance(cfg, backend, restarts, "intro"), "levels": levels,
               **_loss_block(result.run)}
    write_csv(out / "levels.csv", ["feature_prob", "n_represented", "arrangement", "detail", "d_star", "gaps_deg"],
              [[lv["feature_prob"], lv["n_represented"], lv["arrangement"], lv["detail"], lv["d_star"],
                "/".join(f"{g:.2f}" for g in lv["gaps_deg"])] for lv in levels])
    W = result.run.W
    write_csv(out / "geometry_2d.csv", ["feature_prob", "feature", "w0", "w1", "norm", "bias", "importance"],
              [[cfg.feature_prob[k], i, float(W[k, i, 0]), float(W[k, i, 1]), float(np.linalg.norm(W[k, i])),
                float(result.run.b[k, i]), cfg.importance_rows()[k][i]] for k in range(cfg.L) for i in range(cfg.n)])
    write_bytes_atomic(out / "geometry_2d.png", plots.plot_geometry_2d(result.levels, W, cfg.importance_rows()[0]))
    _save_norms(cfg, W, out)
    return _finish(out, metrics, intro_table(result.levels), report_root)


def _save_norms(cfg: TMSConfig, W: np.ndarray, out: Path) -> None:
    norms, phi = feature_norms(W), interference(W)
    write_csv(out / "norms_interference.csv", ["feature_prob", "feature", "norm", "interference"],
              [[cfg.feature_prob[k], i, float(norms[k, i]), float(phi[k, i])] for k in range(cfg.L)
               for i in range(cfg.n)])
    write_bytes_atomic(out / "norms_interference.png", plots.plot_norms_interference(list(cfg.feature_prob), norms, phi))


def save_dims(cfg: TMSConfig, result, out: Path, backend: str, restarts: int, experiment: str = "dims",
              report_root: Path | None = None) -> Saved:
    from alignlab.superposition.dims import dims_json, dims_table, plateau_run

    out = Path(out)
    levels = dims_json(result.levels)
    metrics = {"experiment": experiment, "provenance": provenance(cfg, backend, restarts, experiment),
               "plateau_half_levels": plateau_run(result.levels), "levels": levels, **_loss_block(result.run)}
    write_csv(out / "levels.csv", ["inv_density", "feature_prob", "d_star", "n_represented", "n_dims_above_0_1"]
              + [f"near_{k}" for k in levels[0]["clusters"]] + [f"line_{k}" for k in levels[0]["lines"]],
              [[lv["inv_density"], lv["feature_prob"], lv["d_star"], lv["n_represented"], lv["n_dims_above_0_1"]]
               + list(lv["clusters"].values()) + [int(t["present"]) for t in lv["lines"].values()] for lv in levels])
    write_csv(out / "dimensionality.csv", ["inv_density", "feature", "D_i", "norm", "interference"],
              [[lv["inv_density"], i, d, lv["norms"][i], lv["interference"][i]] for lv in levels
               for i, d in enumerate(lv["dims"])])
    write_bytes_atomic(out / "dimensionality.png", plots.plot_dimensionality(result.levels, seed=cfg.seed))
    _save_norms(cfg, result.run.W, out)
    return _finish(out, metrics, dims_table(result.levels), report_root)


def save_phase(cfg: TMSConfig, result, out: Path, backend: str, restarts: int,
               report_root: Path | None = None) -> Saved:
    from alignlab.superposition.phase import phase_table

    out = Path(out)
    cells = [{"feature_prob": c.feature_prob, "ratio": c.ratio, "norm_1": c.norm_1, "norm_2": c.norm_2,
              "dot": c.dot, "phase": c.phase} for c in result.cells]
    counts = {name: sum(c["phase"] == name for c in cells) for name in sorted({c["phase"] for c in cells})}
    metrics = {"experiment": "phase", "provenance": provenance(cfg, backend, restarts, "phase"), "counts": counts,
               "cells": cells, **_loss_block(result.run)}
    write_csv(out / "phase.csv", ["feature_prob", "ratio", "norm_1", "norm_2", "dot", "phase"],
              [list(c.values()) for c in cells])
    write_bytes_atomic(out / "phase_diagram.png", plots.plot_phase_diagram(result.cells))
    return _finish(out, metrics, phase_table(result.cells), report_root)


def save_poly(reports: list, out: Path, extra: dict | None = None, report_root: Path | None = None) -> Saved:
    """Polysemanticity cases: one heatmap and CSV per report."""
    out = Path(out)
    lines = [f"{'case':<14} {'poly_frac':>9} {'concepts/neuron':<18} {'features<=neurons':>17} {'guard':>6}"]
    for rep in reports:
        g = rep.guard
        lines.append(f"{rep.name:<14} {rep.poly_frac:9.2f} {str(tuple(rep.concepts_per_neuron)):<18} "
                     f"{str(g.n_features <= g.n_neurons):>17} {str(g.holds):>6}")
        write_csv(out / f"poly_{rep.name}.csv", ["neuron"] + rep.concepts,
                  [[j] + [float(v) for v in rep.R[j]] for j in range(rep.R.shape[0])])
        write_bytes_atomic(out / f"poly_{rep.name}.png", plots.plot_response(rep))
    metrics = {"experiment": "polysemantic", "provenance": provenance(command="polysemantic"),
               "cases": [rep.to_json() for rep in reports], **(extra or {})}
    return _finish(out, metrics, "\n".join(lines), report_root)
