"""The study's conditions (issue 16): one intervention each, measured on the same held-out prompts.

Kinds (r = raw difference of means, r̂ = r/‖r‖, l* = the direction's selected layer, L = number of blocks):

- ``base``: no intervention.
- ``ablate_all``: directional ablation x <- x - (x·r̂)r̂ at every block input and every attention/MLP write
  (RD; ``intervene.ablate``).
- ``ablate_layer``: the same projection at resid_pre[l*] only (one point, like single-layer steering).
- ``subtract_layer``: x <- x - c·r at resid_pre[l*] (RD's ActAdd bypass; natural coefficient c = 1).
- ``subtract_all``: x <- x - (c/(l*+1))·r at resid_pre of every layer. The shifts accumulate in the residual
  stream, so the natural coefficient c = 1 moves the stream by exactly r by the time it reaches l* (as
  single-layer subtraction does) and by L/(l*+1)·r at the last block.
- ``edited``: the orthogonalised weights (``edit.orthogonalize``), no hooks.

Each condition gives: harmful test refusals (judge) and degenerate flags of its >= 128-token generations,
first-token KL per harmless test prompt, and CE on the base model's harmless completions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch

from alignlab.models.anatomy import map_model
from alignlab.models.hooks import hook_context

Kind = Literal["base", "ablate_all", "ablate_layer", "subtract_layer", "subtract_all", "edited"]


@dataclass(frozen=True)
class Direction:
    vector: torch.Tensor
    """Raw direction [d] float64."""
    layer: int
    """The layer it was selected at (resid_pre index)."""
    position: int | None
    """Post-instruction position it was measured at (None: not a position of the prompt)."""
    source: str


@dataclass(frozen=True)
class Condition:
    name: str
    label: str
    kind: Kind
    direction: str | None = None
    """Key into the study's direction table."""
    coeff: float = 1.0
    """Multiple of the natural coefficient (subtraction kinds only)."""

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "direction": self.direction, "coeff": self.coeff}


def coeff_name(c: float) -> str:
    return f"{c:g}"


def build_conditions(
    positions: list[int], chosen_position: int, coefficients: tuple[float, ...]
) -> list[Condition]:
    """Every condition the claims read, each once (the instruction direction at its selected position IS the
    all-layer ablation of claims 1-4)."""
    out = [
        Condition("base", "base model", "base"),
        Condition("ablate_all", "instructions: ablation, every layer", "ablate_all", "instructions"),
        Condition("src_responses", "responses: refusal vs compliance", "ablate_all", "responses"),
        Condition(
            "src_base_responses", "base responses: harmful vs harmless", "ablate_all", "base_responses"
        ),
    ]
    for p in positions:
        if p != chosen_position:
            out.append(Condition(f"pos{p}", f"post-instruction position {p}", "ablate_all", f"pos{p}"))
    out += [
        Condition("pos_last_instruction", "last instruction token", "ablate_all", "last_instruction"),
        Condition("pos_mean", "mean over post-instruction positions", "ablate_all", "position_mean"),
        Condition("ablate_layer", "ablation at the selected layer only", "ablate_layer", "instructions"),
    ]
    for kind, text in (
        ("subtract_layer", "subtract c·r at the selected layer"),
        ("subtract_all", "subtract c·r at every layer"),
    ):
        out += [
            Condition(f"{kind}@{coeff_name(c)}", f"{text}, c = {coeff_name(c)}", kind, "instructions", c)
            for c in coefficients
        ]
    out.append(Condition("edited", "orthogonalised weights", "edited", "instructions"))
    return out


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v.double() / v.double().norm().clamp_min(1e-8)


@contextmanager
def ablate_at(model: torch.nn.Module, direction: torch.Tensor, layer: int) -> Iterator[None]:
    """Project r̂ out of resid_pre[layer] only."""
    from alignlab.refusal.intervene import check_direction, project_out

    anatomy = map_model(model)
    check_direction(direction, anatomy.d_model)
    r_hat = _unit(direction)
    with hook_context(model, [("block_in", layer, lambda x, _l: project_out(x, r_hat))], anatomy):
        yield


@contextmanager
def subtract_every_layer(
    model: torch.nn.Module, direction: torch.Tensor, layer: int, coeff: float
) -> Iterator[None]:
    """x <- x - (coeff/(layer+1))·r at resid_pre of every block (accumulates to coeff·r by resid_pre[layer])."""
    from alignlab.refusal.intervene import check_direction

    anatomy = map_model(model)
    check_direction(direction, anatomy.d_model)
    step = -(coeff / (layer + 1)) * direction.double()  # [d]

    def shift(x: torch.Tensor, _layer: int) -> torch.Tensor:
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        return (x.to(work) + step.to(device=x.device, dtype=work)).to(x.dtype)

    with hook_context(model, [("block_in", i, shift) for i in range(anatomy.n_layers)], anatomy):
        yield


ContextFactory = Callable[[], AbstractContextManager] | None


def context_for(cond: Condition, model: torch.nn.Module, directions: dict[str, Direction]) -> ContextFactory:
    """The hook context factory of ``cond`` (None: no hooks; ``edited`` uses other weights instead)."""
    from alignlab.refusal.intervene import ablate, add_direction

    if cond.kind in ("base", "edited"):
        return None
    assert cond.direction is not None
    d = directions[cond.direction]
    vec = d.vector.float()
    if cond.kind == "ablate_all":
        return lambda: ablate(model, vec)
    if cond.kind == "ablate_layer":
        return lambda: ablate_at(model, vec, d.layer)
    if cond.kind == "subtract_layer":
        return lambda: add_direction(model, vec, d.layer, -cond.coeff)
    return lambda: subtract_every_layer(model, vec, d.layer, cond.coeff)
