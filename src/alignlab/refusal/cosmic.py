"""COSMIC direction and layer choice (Siu et al. 2025, "COSMIC: Generalized Refusal Direction Identification
in LLM Activations"): no generation and no output-based score, only cosine similarities of activations.

1. L_low: the layers where the harmful and harmless mean activations (post-instruction positions,
   concatenated) are least alike -- the lowest 10 % by cosine similarity, at least one layer.
2. For a candidate r: ablate r everywhere on harmful val prompts and add r at its layer on harmless val prompts;
   at L_low, S_comply = cos(mean harmful-ablated activation, harmless mean) and S_refuse =
   cos(mean harmless-added activation, harmful mean). The candidate with the largest S_comply + S_refuse wins:
   its ablation makes harmful prompts look harmless inside the model and its addition the reverse.
A screening pass on ``screen_n`` prompts ranks every candidate; the best ``full_k`` are rescored on all of val.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alignlab.models.anatomy import map_model
from alignlab.models.chat import ChatFormat
from alignlab.models.hooks import hook_context
from alignlab.refusal.config import SelectConfig
from alignlab.refusal.forward import batches, position_ids
from alignlab.refusal.intervene import ablate, add_direction


@dataclass
class CosmicScore:
    position: int
    layer: int
    comply: float
    refuse: float

    @property
    def total(self) -> float:
        return self.comply + self.refuse


def low_similarity_layers(mean_harmful: torch.Tensor, mean_harmless: torch.Tensor, frac: float = 0.1) -> list[int]:
    """Layers (of [n_pos, L, d] means) whose harmful/harmless means are least alike, lowest ``frac`` of them."""
    n_layers = mean_harmful.shape[1]
    a = mean_harmful.transpose(0, 1).reshape(n_layers, -1)  # [L, n_pos*d]
    b = mean_harmless.transpose(0, 1).reshape(n_layers, -1)
    sims = F.cosine_similarity(a, b, dim=-1)
    k = max(1, int(math.ceil(frac * n_layers)))
    return sorted(int(i) for i in sims.argsort()[:k])


class _Activations:
    """Mean post-instruction activations at ``layers`` for one prompt set, under an optional hook context."""

    def __init__(self, model, fmt: ChatFormat, layers: list[int], batch_size: int) -> None:
        self.model, self.fmt, self.layers, self.batch = model, fmt, layers, batch_size
        self.anatomy = map_model(model)

    def mean(self, texts: Sequence[str], context=None) -> torch.Tensor:
        from contextlib import nullcontext

        n_pos = self.fmt.n_eoi
        captured: dict[int, torch.Tensor] = {}

        def grab(x: torch.Tensor, layer: int) -> None:
            captured[layer] = x[:, -n_pos:, :].double()  # [batch, n_pos, d]
            return None

        total, count = None, 0
        device = next(self.model.parameters()).device
        with context or nullcontext(), hook_context(self.model, [("block_in", lay, grab) for lay in self.layers],
                                                     self.anatomy), torch.no_grad():
            for _, chunk in batches(list(texts), self.batch):
                enc = self.fmt.encode(chunk, device=device, strict=False)
                self.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, use_cache=False,
                           position_ids=position_ids(enc.attention_mask))
                acts = torch.stack([captured[lay] for lay in self.layers], dim=1).cpu()  # [b, |L|, n_pos, d]
                total = acts.sum(0) if total is None else total + acts.sum(0)
                count += acts.shape[0]
        return (total / count).reshape(-1)  # [|L| * n_pos * d]


def cosmic_scores(model, fmt: ChatFormat, r: torch.Tensor, candidates: list[tuple[int, int]], layers: list[int],
                  harmful: Sequence[str], harmless: Sequence[str], batch_size: int) -> list[CosmicScore]:
    acts = _Activations(model, fmt, layers, batch_size)
    ref_harmful, ref_harmless = acts.mean(harmful), acts.mean(harmless)
    out = []
    for position, layer in candidates:
        d = r[position, layer].float()
        ablated = acts.mean(harmful, ablate(model, d))
        added = acts.mean(harmless, add_direction(model, d, layer, 1.0))
        out.append(CosmicScore(position, layer, float(F.cosine_similarity(ablated, ref_harmless, dim=0)),
                               float(F.cosine_similarity(added, ref_harmful, dim=0))))
    return out


def cosmic_select(model, fmt: ChatFormat, r: torch.Tensor, mean_harmful: torch.Tensor, mean_harmless: torch.Tensor,
                  harmful_val: Sequence[str], harmless_val: Sequence[str], cfg: SelectConfig) -> dict:
    """Screen every candidate below the pruned layers, rescore the best ``full_k`` on all of val, pick argmax."""
    n_pos, n_layers, _ = r.shape
    max_layer = int(n_layers * (1 - cfg.prune_frac))
    layers = low_similarity_layers(mean_harmful, mean_harmless)
    cands = [(p - n_pos, layer) for layer in range(max_layer) for p in range(n_pos)]
    n = cfg.screen_n or len(harmful_val)
    screened = cosmic_scores(model, fmt, r, cands, layers, harmful_val[:n], harmless_val[:n], cfg.batch_size)
    top = sorted(screened, key=lambda s: -s.total)[: cfg.full_k]
    full = cosmic_scores(model, fmt, r, [(s.position, s.layer) for s in top], layers, harmful_val, harmless_val,
                         cfg.batch_size)
    best = max(full, key=lambda s: (s.total, -s.layer))
    return {"layers_low": layers, "best": best, "screened": screened, "full": full}
