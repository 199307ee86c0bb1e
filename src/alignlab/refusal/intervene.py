"""Runtime interventions as hook contexts (spec §2.8): directional ablation and activation addition.

Both work around ``model.generate``: the hooks sit on modules and fire on every forward, KV-cached
decoding steps included.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from alignlab.errors import AlignlabError
from alignlab.models.anatomy import Anatomy, map_model
from alignlab.models.hooks import hook_context

ABLATION_POINTS = ("block_in", "attn_out", "mlp_out")


def check_direction(direction: torch.Tensor, d_model: int) -> None:
    if direction.ndim != 1 or direction.shape[0] != d_model:
        raise AlignlabError(f"direction has shape {tuple(direction.shape)}; this model needs a vector of width {d_model}")
    if not torch.isfinite(direction).all():
        raise AlignlabError("direction contains NaN or inf")


def project_out(x: torch.Tensor, r_hat: torch.Tensor) -> torch.Tensor:
    """x - (x·r̂) r̂, computed in (at least) float32 and cast back. x: [..., d], r̂: [d] unit."""
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(work)
    r = r_hat.to(device=x.device, dtype=work)
    return (xf - (xf @ r).unsqueeze(-1) * r).to(x.dtype)


@contextmanager
def ablate(model: torch.nn.Module, direction: torch.Tensor, anatomy: Anatomy | None = None) -> Iterator[None]:
    """Project ``direction`` out of every block input, attention write and MLP write, at every layer."""
    anatomy = anatomy or map_model(model)
    check_direction(direction, anatomy.d_model)
    r_hat = direction.double() / direction.double().norm().clamp_min(1e-8)  # exactly unit
    fn = lambda x, layer: project_out(x, r_hat)  # noqa: E731
    hooks = [(point, layer, fn) for layer in range(anatomy.n_layers) for point in ABLATION_POINTS]
    with hook_context(model, hooks, anatomy):
        yield


@contextmanager
def add_direction(
    model: torch.nn.Module, direction: torch.Tensor, layer: int, coeff: float = 1.0, anatomy: Anatomy | None = None
) -> Iterator[None]:
    """Activation addition: x <- x + c·r at resid_pre[layer], every position, with the RAW (un-normalised) r."""
    anatomy = anatomy or map_model(model)
    check_direction(direction, anatomy.d_model)
    def add(x: torch.Tensor, _layer: int) -> torch.Tensor:
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        return (x.to(work) + coeff * direction.to(device=x.device, dtype=work)).to(x.dtype)

    with hook_context(model, [("block_in", layer, add)], anatomy):
        yield
