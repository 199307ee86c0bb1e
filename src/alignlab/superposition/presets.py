"""Experiment grids of the reference notebook and ARENA 3.0 (spec §3.3, §3.4, §5.3).

``experiment_config(name, preset, ...)`` returns the TMSConfig for intro | features | dims | phase.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from alignlab.errors import AlignlabError
from alignlab.superposition.config import PRESETS, TMSConfig

EXPERIMENTS: tuple[str, ...] = ("intro", "features", "dims", "phase")

# Phase-diagram grid (spec §5.3, project configuration): r = I_2 / I_1 and p on log grids of 11 points.
PHASE_RATIOS: tuple[float, ...] = tuple(float(v) for v in 10.0 ** np.linspace(-1, 1, 11))
PHASE_PROBS: tuple[float, ...] = tuple(float(v) for v in 10.0 ** np.linspace(-2, 0, 11))


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _intro(preset: str) -> dict:
    if preset == "arena-v3":  # ARENA 3.0: 8 instances, p = 50^-linspace(0, 1, 8)
        return dict(n=5, m=2, L=8, importance=_floats(0.9 ** np.arange(5)),
                    feature_prob=_floats(50.0 ** -np.linspace(0, 1, 8)))
    return dict(n=5, m=2, L=10, importance=_floats(0.9 ** np.arange(5)),
                feature_prob=_floats(20.0 ** -np.linspace(0, 1, 10)))


def _features(preset: str) -> dict:
    n = 100
    return dict(n=n, m=20, L=20, importance=_floats(100.0 ** -np.linspace(0, 1, n)),
                feature_prob=_floats(20.0 ** -np.linspace(0, 1, 20)))


def _dims(preset: str) -> dict:
    return dict(n=200, m=20, L=20, importance=(1.0,) * 200,
                feature_prob=_floats(20.0 ** -(np.arange(20) / 19)))


def _phase(preset: str) -> dict:
    # Instance k = (ratio index, prob index) row-major: I = (1, r), p from the prob grid.
    importance: list[float] = []
    probs: list[float] = []
    for r in PHASE_RATIOS:
        for p in PHASE_PROBS:
            importance += [1.0, r]
            probs.append(p)
    return dict(n=2, m=1, L=len(probs), importance=tuple(importance), feature_prob=tuple(probs),
                init="per_instance")


_BUILDERS = {"intro": _intro, "features": _features, "dims": _dims, "phase": _phase}


def experiment_config(experiment: str, preset: str = "tms-notebook", **overrides: object) -> TMSConfig:
    """TMSConfig for one experiment under one preset; ``overrides`` replace any field (None = keep)."""
    if experiment not in _BUILDERS:
        raise AlignlabError(f"unknown experiment {experiment!r}; use one of {', '.join(EXPERIMENTS)}")
    if preset not in PRESETS:
        raise AlignlabError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    fields = _BUILDERS[experiment](preset)
    if preset == "arena-v3":  # ARENA 3.0: Adam without weight decay, constant lr 1e-3
        fields.update(optimizer="adam", weight_decay=0.0)
    cfg = TMSConfig(preset=preset, **fields)
    clean = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(cfg, **clean) if clean else cfg


def select_instances(cfg: TMSConfig, keep: list[int]) -> TMSConfig:
    """The same config restricted to the instances in ``keep`` (used by quick tests and benches)."""
    if not keep or any(not 0 <= k < cfg.L for k in keep):
        raise AlignlabError(f"instance indices must lie in [0, {cfg.L}); got {keep}")
    rows = cfg.importance_rows()
    return dataclasses.replace(
        cfg, L=len(keep), feature_prob=tuple(cfg.feature_prob[k] for k in keep),
        importance=tuple(v for k in keep for v in rows[k]),
    )
