"""Sparse autoencoders: paper-faithful architectures, trainer, SAELens-format interop (spec docs/sae-core.md).

Core API::

    from alignlab.sae import SAEConfig, build_sae, train_saes, TrainConfig, save_sae, load_sae
"""

import importlib

# Lazy: importing alignlab.sae (e.g. for its CLI) must not import torch, so `alignlab --help` stays fast.
_LAZY = {
    **{name: "alignlab.sae.base" for name in ("SAE", "LossOutput", "SAEConfig", "TrainState", "build_sae",
                                               "load_sae", "save_sae")},
    **{name: "alignlab.sae.registry" for name in ("PRESETS", "REGISTRY", "preset_config",
                                                   "preset_train_overrides")},
    **{name: "alignlab.sae.trainer" for name in ("TrainConfig", "TrainResult", "train_saes")},
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'alignlab.sae' has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "REGISTRY",
    "SAE",
    "LossOutput",
    "SAEConfig",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "build_sae",
    "load_sae",
    "preset_config",
    "preset_train_overrides",
    "save_sae",
    "train_saes",
]
