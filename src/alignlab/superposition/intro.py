"""Five features in two dimensions across sparsity (Elhage et al. 2022, "Demonstrating Superposition"; spec §5.1)."""

from __future__ import annotations

from dataclasses import dataclass

from alignlab.superposition.config import TMSConfig
from alignlab.superposition.geometry import Geometry2D, geometry_2d
from alignlab.superposition.metrics import dimensionality, dims_per_feature, interference
from alignlab.superposition.runs import GridRun, train_with_restarts


@dataclass(frozen=True)
class IntroLevel:
    """One sparsity level of the intro grid."""

    feature_prob: float
    d_star: float
    n_represented: int
    arrangement: str
    geometry: Geometry2D
    dims: list[float]
    """D_i per feature."""
    interference: list[float]
    """phi_i per feature."""
    held_out_loss: float
    restart: int
    """Which restart was kept."""


@dataclass(frozen=True)
class IntroResult:
    config: TMSConfig
    run: GridRun
    levels: list[IntroLevel]


def analyse_intro(cfg: TMSConfig, run: GridRun) -> list[IntroLevel]:
    """Per-level geometry and metrics of a trained m = 2 grid."""
    D = dimensionality(run.W)
    phi = interference(run.W)
    d_star = dims_per_feature(run.W)
    levels = []
    for k in range(cfg.L):
        geo = geometry_2d(run.W[k], run.b[k])
        levels.append(IntroLevel(
            feature_prob=float(cfg.feature_prob[k]), d_star=float(d_star[k]), n_represented=len(geo.represented),
            arrangement=geo.arrangement, geometry=geo, dims=[float(v) for v in D[k]],
            interference=[float(v) for v in phi[k]],
            held_out_loss=float(run.held_out_loss[run.chosen[k], k]), restart=int(run.chosen[k]),
        ))
    return levels


def run_intro(cfg: TMSConfig, restarts: int = 1, backend: str = "torch", progress: bool | None = None) -> IntroResult:
    """Train the grid (best of ``restarts``) and analyse every level."""
    run = train_with_restarts(cfg, restarts=restarts, backend=backend, progress=progress)
    return IntroResult(config=cfg, run=run, levels=analyse_intro(cfg, run))


def intro_table(levels: list[IntroLevel]) -> str:
    """Text table shaped like spec §5.1."""
    lines = [f"{'1-S':>6} {'repr':>4} {'arrangement':<12} {'detail':<32} {'gaps (deg)':<26} {'D*':>5}"]
    for lv in levels:
        gaps = "/".join(f"{g:.0f}" for g in lv.geometry.gaps_deg)
        lines.append(f"{lv.feature_prob:6.3f} {lv.n_represented:4d} {lv.arrangement:<12} {lv.geometry.detail:<32} "
                     f"{gaps:<26} {lv.d_star:5.2f}")
    return "\n".join(lines)


def intro_json(result: IntroResult) -> list[dict]:
    """Machine-readable per-level summary (printed by ``intro --json``)."""
    out = []
    for lv in result.levels:
        geo = lv.geometry
        out.append({
            "feature_prob": lv.feature_prob,
            "sparsity": 1.0 - lv.feature_prob,
            "n_represented": lv.n_represented,
            "represented": geo.represented,
            "arrangement": lv.arrangement,
            "detail": geo.detail,
            "gaps_deg": geo.gaps_deg,
            "angles_deg": geo.angles_deg,
            "antipodal_pairs": [list(p) for p in geo.antipodal_pairs],
            "norms": geo.norms,
            "biases": geo.biases,
            "dims": lv.dims,
            "interference": lv.interference,
            "d_star": lv.d_star,
            "held_out_loss": lv.held_out_loss,
            "restart": lv.restart,
        })
    return out

