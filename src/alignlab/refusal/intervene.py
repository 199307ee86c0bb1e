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


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _OnDevice:
    """A vector copied once per (device, dtype), not on every hook call (a host-to-device copy per hook
    synchronises the GPU: 96 of them per forward of an 8B model)."""

    def __init__(self, v: torch.Tensor) -> None:
        self.v, self.copies = v, {}

    def like(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, _work_dtype(x))
        if key not in self.copies:
            self.copies[key] = self.v.to(device=x.device, dtype=key[1])
        return self.copies[key]


def project_out(x: torch.Tensor, r_hat: torch.Tensor | _OnDevice) -> torch.Tensor:
    """x - (x·r̂) r̂, computed in (at least) float32 and cast back. x: [..., d], r̂: [d] unit."""
    work = _work_dtype(x)
    r = r_hat.like(x) if isinstance(r_hat, _OnDevice) else r_hat.to(device=x.device, dtype=work)
    coef = x.to(work) @ r  # [...] in float32 (or float64)
    return torch.addcmul(x, coef.unsqueeze(-1), r, value=-1.0).to(x.dtype)  # one pass, no [..., d] temporary


@contextmanager
def ablate(model: torch.nn.Module, direction: torch.Tensor, anatomy: Anatomy | None = None) -> Iterator[None]:
    """Project ``direction`` out of every block input, attention write and MLP write, at every layer."""
    anatomy = anatomy or map_model(model)
    check_direction(direction, anatomy.d_model)
    r_hat = _OnDevice(direction.double() / direction.double().norm().clamp_min(1e-8))  # exactly unit
    fn = lambda x, layer: project_out(x, r_hat)  # noqa: E731
    hooks = [(point, layer, fn) for layer in range(anatomy.n_layers) for point in ABLATION_POINTS]
    with hook_context(model, hooks, anatomy):
        yield


def orthonormal_basis(directions: torch.Tensor, d_model: int, min_residual: float = 1e-6) -> torch.Tensor:
    """Orthonormal rows [k, d] (float64) spanning the rows of ``directions`` [k, d], in their order (Gram-Schmidt:
    row i is the unit part of direction i orthogonal to rows < i). A direction (nearly) inside the span of the
    earlier ones is an error: it would add nothing to the subspace."""
    if directions.ndim != 2 or directions.shape[1] != d_model or directions.shape[0] < 1:
        raise AlignlabError(f"a subspace needs directions of shape [k, {d_model}], got {tuple(directions.shape)}")
    if not torch.isfinite(directions).all():
        raise AlignlabError("subspace directions contain NaN or inf")
    rows: list[torch.Tensor] = []
    for i, v in enumerate(directions.double()):
        norm = float(v.norm())
        for q in rows:
            v = v - (v @ q) * q
        if norm == 0.0 or float(v.norm()) <= min_residual * norm:
            raise AlignlabError(f"subspace direction {i} lies in the span of the ones before it")
        rows.append(v / v.norm())
    return torch.stack(rows)


def project_out_basis(x: torch.Tensor, basis: _OnDevice) -> torch.Tensor:
    """x - Q(Qᵀx) for orthonormal rows Q [k, d], in (at least) float32. x: [..., d]."""
    work = _work_dtype(x)
    q = basis.like(x)  # [k, d]
    xw = x.to(work)
    return (xw - (xw @ q.T) @ q).to(x.dtype)  # [..., k] @ [k, d]


@contextmanager
def ablate_subspace(model: torch.nn.Module, directions: torch.Tensor,
                    anatomy: Anatomy | None = None) -> Iterator[None]:
    """Project the span of ``directions`` [k, d] out of every block input, attention write and MLP write: rank-k
    directional ablation, x <- x - Q(Qᵀx) with Q an orthonormal basis of the span (k = 1 is ``ablate``)."""
    anatomy = anatomy or map_model(model)
    basis = _OnDevice(orthonormal_basis(directions, anatomy.d_model))
    fn = lambda x, layer: project_out_basis(x, basis)  # noqa: E731
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
    r = _OnDevice(direction)

    def add(x: torch.Tensor, _layer: int) -> torch.Tensor:
        return (x.to(_work_dtype(x)) + coeff * r.like(x)).to(x.dtype)

    with hook_context(model, [("block_in", layer, add)], anatomy):
        yield
