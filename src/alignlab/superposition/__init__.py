"""Toy Models of Superposition (Elhage et al. 2022) and polysemanticity without superposition (Chan 2024).

Light on purpose: ``alignlab.superposition.cli`` is imported by ``alignlab --help``, so names are loaded lazily.

    from alignlab.superposition import experiment_config, run_intro
    result = run_intro(experiment_config("intro", steps=3000), restarts=4)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TMSConfig": "config", "RunOptions": "config", "experiment_config": "presets", "select_instances": "presets",
    "train_torch": "tms", "train_numpy": "numpy_backend", "train": "runs", "train_with_restarts": "runs",
    "feature_norms": "metrics", "interference": "metrics", "dimensionality": "metrics",
    "dims_per_feature": "metrics", "line_test": "metrics", "geometry_2d": "geometry",
    "run_intro": "intro", "run_dims": "dims", "run_phase": "phase",
    "run_c1": "polysemantic", "run_c2": "polysemantic", "run_c3": "polysemantic", "run_c3_xor": "polysemantic",
    "run_superposition": "polysemantic",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"alignlab.superposition.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'alignlab.superposition' has no attribute {name!r}")
