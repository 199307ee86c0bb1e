"""Weighted directional ablation (issue 13 §1): a weight w ∈ [0, 1] per layer and component.

x <- x - w·(x·r̂)r̂ on the attention write and the MLP write of layer l, and on the embedding (block 0's
input) with its own weight. With every weight 1 this is the full ablation of Arditi et al.; the search
explores weights drawn from a kernel per component (peak layer, max and min weight, falloff distance).
The weight form is exact: W <- W - w·r̂(r̂ᵀW) equals W - (√w r̂)((√w r̂)ᵀW), so the existing
orthogonalisation runs with r̂ scaled by √w (see ``edit.orthogonalize(weights=...)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from alignlab.errors import AlignlabError
from alignlab.models.anatomy import Anatomy, map_model
from alignlab.models.hooks import hook_context

COMPONENTS = ("attn", "mlp")


@dataclass(frozen=True)
class Kernel:
    """Weights over layers for one component: ``max_weight`` at ``peak`` (a float layer), falling linearly
    to ``min_weight`` at ``falloff`` layers away, and 0 beyond."""

    max_weight: float
    peak: float
    min_weight: float
    falloff: float

    def __post_init__(self) -> None:
        values = (self.max_weight, self.peak, self.min_weight, self.falloff)
        if not all(math.isfinite(v) for v in values):
            raise AlignlabError(f"kernel parameters must be finite, got {values}")
        if not (0 <= self.min_weight <= self.max_weight <= 1) or self.falloff <= 0:
            raise AlignlabError("kernel needs 0 <= min_weight <= max_weight <= 1 and falloff > 0")

    def weights(self, n_layers: int) -> list[float]:
        out = []
        for layer in range(n_layers):
            dist = abs(layer - self.peak)
            if dist > self.falloff:
                out.append(0.0)
            else:
                out.append(self.max_weight + (dist / self.falloff) * (self.min_weight - self.max_weight))
        return out


@dataclass(frozen=True)
class LayerWeights:
    """Ablation weight per layer for each component, and one for the embedding."""

    attn: tuple[float, ...]
    mlp: tuple[float, ...]
    embed: float = 0.0

    def __post_init__(self) -> None:
        if len(self.attn) != len(self.mlp):
            raise AlignlabError("attn and mlp weights need one value per layer each")
        for w in (*self.attn, *self.mlp, self.embed):
            if not (math.isfinite(w) and 0 <= w <= 1):
                raise AlignlabError(f"ablation weights must lie in [0, 1], got {w}")

    @classmethod
    def full(cls, n_layers: int) -> LayerWeights:
        return cls((1.0,) * n_layers, (1.0,) * n_layers, 1.0)

    @classmethod
    def from_kernels(cls, n_layers: int, attn: Kernel, mlp: Kernel, embed: float = 0.0) -> LayerWeights:
        return cls(tuple(attn.weights(n_layers)), tuple(mlp.weights(n_layers)), embed)

    def of(self, role: str, layer: int) -> float:
        if role == "attn":
            return self.attn[layer]
        if role in ("mlp", "expert", "shared_expert"):  # every writer of the MLP sublayer (MoE included)
            return self.mlp[layer]
        raise AlignlabError(f"unknown writer role {role!r}")

    def to_json(self) -> dict[str, list[float] | float]:
        return {"attn": list(self.attn), "mlp": list(self.mlp), "embed": self.embed}

    @classmethod
    def from_json(cls, obj: dict) -> LayerWeights:
        return cls(tuple(obj["attn"]), tuple(obj["mlp"]), float(obj["embed"]))


def interpolate_direction(r: torch.Tensor, position: int, index: float) -> torch.Tensor:
    """The raw direction at a float layer ``index``: linear interpolation between the candidates of the two
    neighbouring layers at ``position``. r: [n_pos, n_layers, d] -> [d]."""
    n_layers = r.shape[1]
    if not (math.isfinite(index) and 0 <= index <= n_layers - 1):
        raise AlignlabError(f"direction index must lie in [0, {n_layers - 1}], got {index}")
    lo = int(math.floor(index))
    hi = min(lo + 1, n_layers - 1)
    frac = index - lo
    return (1 - frac) * r[position, lo] + frac * r[position, hi]


def _weighted_projection(r_hat: torch.Tensor, weight: float):
    from alignlab.refusal.intervene import _OnDevice, _work_dtype

    r_dev = _OnDevice(r_hat)

    def fn(x: torch.Tensor, _layer: int) -> torch.Tensor:
        r = r_dev.like(x)
        coef = x.to(_work_dtype(x)) @ r  # [...]
        return torch.addcmul(x.to(r.dtype), coef.unsqueeze(-1), r, value=-weight).to(x.dtype)

    return fn


@contextmanager
def ablate_weighted(model: torch.nn.Module, direction: torch.Tensor, weights: LayerWeights,
                    anatomy: Anatomy | None = None) -> Iterator[None]:
    """x <- x - w·(x·r̂)r̂ on each layer's attention and MLP writes and on the embedding (block 0 input)."""
    anatomy = anatomy or map_model(model)
    if direction.shape != (anatomy.d_model,) or not bool(direction.isfinite().all()):
        raise AlignlabError(f"direction must be a finite vector of width {anatomy.d_model}")
    if len(weights.attn) != anatomy.n_layers:
        raise AlignlabError(f"weights cover {len(weights.attn)} layers; the model has {anatomy.n_layers}")
    r_hat = direction.double() / direction.double().norm().clamp_min(1e-8)
    hooks = []
    if weights.embed > 0:
        hooks.append(("block_in", 0, _weighted_projection(r_hat, weights.embed)))
    for layer in range(anatomy.n_layers):
        for role, point in (("attn", "attn_out"), ("mlp", "mlp_out")):
            w = weights.of(role, layer)
            if w > 0:
                hooks.append((point, layer, _weighted_projection(r_hat, w)))
    with hook_context(model, hooks, anatomy):
        yield
