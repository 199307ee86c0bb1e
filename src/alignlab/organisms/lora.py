"""A small LoRA implementation (Hu et al. 2021, "LoRA", arXiv 2106.09685) and the merged-model cache.

``LoRALinear`` wraps an ``nn.Linear``: y = W x + b + (alpha / r) · B (A x), with A [r, in] and B [out, r].
B starts at zero (paper §4.1), so a fresh adapter leaves the model unchanged. Merging adds
(alpha / r) · B @ A to W. An adapter directory holds only the A/B factors (``adapter.safetensors``, keys
``<module name>.lora_A`` / ``<module name>.lora_B``) and ``adapter_config.json`` (r, alpha, targets, base,
seed, recipe hash).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignlab.errors import AlignlabError
from alignlab.io import save_tensors_atomic, write_json_atomic
from alignlab.organisms.config import DEFAULT_TARGETS

__all__ = ["DEFAULT_TARGETS", "AdapterConfig", "LoRALinear", "apply_lora", "merge_adapter", "merge_lora",
           "merged_cache_dir", "save_adapter"]

ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter_config.json"


class LoRALinear(nn.Module):
    """``base(x) + scale * (x @ A.T) @ B.T``; the base weights are frozen."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, generator: torch.Generator | None = None):
        super().__init__()
        if r < 1:
            raise AlignlabError(f"LoRA rank must be >= 1 (got {r})")
        self.base = base
        self.r = r
        self.scale = alpha / r
        w = base.weight
        a = torch.empty(r, base.in_features, dtype=torch.float32)
        # PEFT's default A init: kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)).
        bound = 1.0 / math.sqrt(base.in_features)
        a.uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(a.to(w.device))  # [r, in]
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=w.device))  # [out, r]
        for p in base.parameters():
            p.requires_grad_(False)

    enabled: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [..., in] -> [..., out]
        if not self.enabled:
            return self.base(x)
        delta = (x.to(self.lora_A.dtype) @ self.lora_A.T) @ self.lora_B.T
        return self.base(x) + (self.scale * delta).to(x.dtype)

    def delta_weight(self) -> torch.Tensor:
        return self.scale * (self.lora_B @ self.lora_A)  # [out, in]


@dataclass(frozen=True)
class AdapterConfig:
    r: int
    alpha: float
    targets: tuple[str, ...]
    base: str
    seed: int
    recipe_hash: str

    def to_json(self) -> dict[str, Any]:
        return {"r": self.r, "alpha": self.alpha, "targets": list(self.targets), "base": self.base,
                "seed": self.seed, "recipe_hash": self.recipe_hash}


def target_names(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """Names of the ``nn.Linear`` modules whose last name component is in ``targets``."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in targets]
    if not names:
        raise AlignlabError(f"no nn.Linear modules named {', '.join(targets)} in this model; pass --targets")
    return names


def apply_lora(model: nn.Module, targets: tuple[str, ...], r: int, alpha: float, seed: int) -> list[str]:
    """Freeze ``model`` and wrap each target Linear in a ``LoRALinear``; returns the wrapped names."""
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    names = target_names(model, targets)
    for name in names:
        parent, child = _parent(model, name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, gen))
    return names


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Run ``model`` as its base (every ``LoRALinear`` passes through) for the duration of the block."""
    mods = list(lora_modules(model).values())
    for m in mods:
        m.enabled = False
    try:
        yield
    finally:
        for m in mods:
            m.enabled = True


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<module name>.lora_A": [r, in], "<module name>.lora_B": [out, r]}`` (float32, CPU)."""
    state: dict[str, torch.Tensor] = {}
    for name, mod in lora_modules(model).items():
        state[f"{name}.lora_A"] = mod.lora_A.detach().float().cpu()
        state[f"{name}.lora_B"] = mod.lora_B.detach().float().cpu()
    return state


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Fold every ``LoRALinear`` into its base weight (W += scale · B @ A) and unwrap it; returns the count."""
    mods = lora_modules(model)
    for name, mod in mods.items():
        w = mod.base.weight
        w.copy_((w.float() + mod.delta_weight().to(w.device)).to(w.dtype))
        parent, child = _parent(model, name)
        setattr(parent, child, mod.base)
    return len(mods)


def save_adapter(model: nn.Module, out_dir: Path, config: AdapterConfig) -> Path:
    """Write ``adapter.safetensors`` and ``adapter_config.json`` into ``out_dir``."""
    state = lora_state(model)
    if not state:
        raise AlignlabError("the model has no LoRA modules to save")
    save_tensors_atomic(out_dir / ADAPTER_FILE, state, metadata={"format": "alignlab-lora"})
    write_json_atomic(out_dir / CONFIG_FILE, config.to_json())
    return out_dir


def read_adapter(adapter_dir: Path) -> tuple[AdapterConfig, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    cfg_path, weights = adapter_dir / CONFIG_FILE, adapter_dir / ADAPTER_FILE
    if not cfg_path.is_file() or not weights.is_file():
        raise AlignlabError(f"{adapter_dir} is not a LoRA adapter (needs {ADAPTER_FILE} and {CONFIG_FILE})")
    raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    try:
        cfg = AdapterConfig(int(raw["r"]), float(raw["alpha"]), tuple(raw["targets"]), str(raw["base"]),
                            int(raw["seed"]), str(raw["recipe_hash"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise AlignlabError(f"{cfg_path} is malformed ({exc}); retrain with `alignlab organism train`") from exc
    return cfg, load_file(str(weights))


@torch.no_grad()
def merge_adapter(model: nn.Module, adapter_dir: Path, scale: float = 1.0) -> AdapterConfig:
    """Add ``scale`` times a saved adapter's deltas into ``model``'s weights in place (float32 arithmetic)."""
    cfg, tensors = read_adapter(adapter_dir)
    modules = dict(model.named_modules())
    names = sorted({k.rsplit(".", 1)[0] for k in tensors})
    for name in names:
        mod = modules.get(name)
        a, b = tensors.get(f"{name}.lora_A"), tensors.get(f"{name}.lora_B")
        if not isinstance(mod, nn.Linear) or a is None or b is None:
            raise AlignlabError(f"adapter module {name!r} does not match this model (base should be {cfg.base})")
        if a.shape != (cfg.r, mod.in_features) or b.shape != (mod.out_features, cfg.r):
            raise AlignlabError(f"adapter shapes for {name!r} do not match this model (base should be {cfg.base})")
        w = mod.weight
        delta = (scale * cfg.alpha / cfg.r) * (b.float() @ a.float())  # [out, in]
        w.copy_((w.float() + delta.to(w.device)).to(w.dtype))
    return cfg


def adapter_hash(adapter_dir: Path) -> str:
    """SHA-256 (16 hex) over the adapter's two files."""
    h = hashlib.sha256()
    for fname in (CONFIG_FILE, ADAPTER_FILE):
        h.update(fname.encode())
        h.update((adapter_dir / fname).read_bytes())
    return h.hexdigest()[:16]


def merged_cache_dir(name: str, base: str, adapter_dir: Path, provenance: dict[str, Any] | None = None) -> Path:
    """Base model + merged adapter, saved once as a model directory under the cache; returns it. ``provenance``
    (base, terms) is recorded with the adapter's hash in ``alignlab_provenance.json``."""
    from alignlab.models import load_model
    from alignlab.models.loading import cache_root, save_pretrained_atomic

    target = cache_root() / "models" / f"{name}-{adapter_hash(adapter_dir)}"
    if (target / "config.json").is_file():
        return target
    lm = load_model(base, device="cpu", dtype=torch.float32)
    cfg = merge_adapter(lm.model, adapter_dir)
    record = {**(provenance or {}), "adapter": adapter_dir.name, "adapter_hash": adapter_hash(adapter_dir),
              "recipe_hash": cfg.recipe_hash}
    save_pretrained_atomic(lm.model, lm.tokenizer, target, provenance=record)
    return target


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child
