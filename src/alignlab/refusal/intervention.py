"""What the pipeline applies after selection: a direction plus how strongly each writer loses it.

RD's pick is full ablation (every block input, attention and MLP write); the search's pick is weighted
ablation (``weights``). Evaluation, the weight edit, export and the report all read this one object.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from alignlab.errors import AlignlabError
from alignlab.refusal.weights import LayerWeights, ablate_weighted


@dataclass(frozen=True)
class Intervention:
    method: str
    """"rd" (single direction, full ablation) or "search" (weighted ablation from the Pareto search)."""
    direction: torch.Tensor
    """Raw direction [d_model] (float64); addition uses it unnormalised."""
    layer: int
    """Layer of the direction (activation addition acts at resid_pre of this layer)."""
    position: int
    weights: LayerWeights | None = None
    """Per-layer ablation weights; None is full ablation."""
    scores: dict[str, Any] | None = None
    layer_means: torch.Tensor | None = None
    """Harmless mean of resid_pre at ``position``, per layer [n_layers, d] (ACE and the biprojected edit)."""
    affine: bool = False
    """ACE: ablate around the harmless mean (hooks only; the weight edit stays the plain projection)."""
    extra: torch.Tensor | None = None
    """Further directions [k-1, d] ablated together with ``direction`` (a rank-k subspace, full ablation only;
    see ``subspace.py``); None is one direction."""

    def __post_init__(self) -> None:
        if self.extra is not None and (self.weights is not None or self.affine):
            raise AlignlabError("a subspace is ablated fully: no per-layer weights and no ACE")

    @property
    def rank(self) -> int:
        return 1 if self.extra is None else 1 + int(self.extra.shape[0])

    def directions(self) -> torch.Tensor:
        """Every ablated direction [k, d]: ``direction`` first, then ``extra``."""
        rows = [self.direction[None]] + ([] if self.extra is None else [self.extra.to(self.direction)])
        return torch.cat(rows)

    def ablate(self, model: torch.nn.Module) -> AbstractContextManager:
        from alignlab.refusal.intervene import ablate

        d = self.direction.float()
        if self.extra is not None:
            from alignlab.refusal.intervene import ablate_subspace

            return ablate_subspace(model, self.directions())
        if self.affine:
            from alignlab.refusal.variants import ablate_affine

            assert self.layer_means is not None
            return ablate_affine(model, d, self.layer_means)
        if self.weights is None:
            return ablate(model, d)
        return ablate_weighted(model, d, self.weights)

    def edit(self, model: torch.nn.Module, cfg: Any, head_mode: str = "clone"):
        """Orthogonalise ``model`` in place (``head_mode``: see ``edit.orthogonalize``)."""
        from alignlab.refusal.edit import orthogonalize, orthogonalize_subspace

        if self.extra is not None:
            return orthogonalize_subspace(model, self.directions(), cfg, head_mode=head_mode)
        rep = orthogonalize(model, self.direction.float(), cfg, weights=self.weights, layer_means=self.layer_means,
                            head_mode=head_mode)
        if self.affine:
            rep.exact = False
            rep.notes.append("ACE has no weight form here (no writer can carry the per-layer offset exactly): the "
                             "edited model is the plain projection; its gap to the ACE hooks is measured")
        return rep

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "layer": self.layer, "position": self.position,
                               "affine": self.affine, "rank": self.rank, **(self.scores or {})}
        if self.weights is not None:
            out["weights"] = self.weights.to_json()
        return out
