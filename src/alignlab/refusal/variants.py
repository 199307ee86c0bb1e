"""Direction and edit variants the field uses (issue 13 §3), beside RD's difference of means:

- projected abliteration: each candidate loses its component along the harmless mean of its own
  (position, layer), r <- r - (r·μ̂)μ̂, so ablating it leaves what harmless prompts share untouched;
- ACE, affine concept editing (Marshall et al. 2024): ablate around the harmless mean instead of around 0,
  x <- x - ((x - μ_l)·r̂)r̂, so the residual's r-component is pinned to where harmless prompts put it;
- norm-preserving biprojected edit (jim-plus / grimjim): per layer, r made orthogonal to that layer's
  harmless mean, the writer's columns projected, then each column rescaled to its old norm. Never exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from alignlab.errors import AlignlabError
from alignlab.models.anatomy import Anatomy, map_model
from alignlab.models.hooks import hook_context
from alignlab.refusal.intervene import _OnDevice, project_out


def project_out_mean(r: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """r - (r·μ̂)μ̂ over the last axis; r, mean: [..., d] (same shape)."""
    m_hat = mean / mean.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return r - (r * m_hat).sum(-1, keepdim=True) * m_hat


def layer_directions(direction: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Unit directions per layer, each orthogonal to that layer's harmless mean: [L, d] (biprojection)."""
    r = project_out_mean(direction.double().expand_as(means), means.double())
    return r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@contextmanager
def ablate_affine(model: torch.nn.Module, direction: torch.Tensor, means: torch.Tensor,
                  anatomy: Anatomy | None = None) -> Iterator[None]:
    """ACE: at every block input x <- x - ((x - μ_l)·r̂)r̂ (μ_l: harmless mean of resid_pre[l], [L, d]), and every
    attention / MLP write loses its r̂-component, so the stream's r-component is μ_l·r̂ at each block."""
    anatomy = anatomy or map_model(model)
    if means.shape != (anatomy.n_layers, anatomy.d_model):
        raise AlignlabError(f"ACE needs one harmless mean per layer [{anatomy.n_layers}, {anatomy.d_model}], "
                            f"got {list(means.shape)}")
    r_hat = direction.double() / direction.double().norm().clamp_min(1e-8)
    offsets = (means.double() @ r_hat).tolist()  # μ_l·r̂ per layer
    r_dev = _OnDevice(r_hat)

    def pin(x: torch.Tensor, layer: int) -> torch.Tensor:
        r = r_dev.like(x)
        xw = x.to(r.dtype)
        coef = xw @ r - offsets[layer]  # [...]
        return torch.addcmul(xw, coef.unsqueeze(-1), r, value=-1.0).to(x.dtype)

    def project(x: torch.Tensor, _layer: int) -> torch.Tensor:
        return project_out(x, r_dev)

    hooks = [("block_in", layer, pin) for layer in range(anatomy.n_layers)]
    hooks += [(point, layer, project) for layer in range(anatomy.n_layers) for point in ("attn_out", "mlp_out")]
    with hook_context(model, hooks, anatomy):
        yield
