"""Candidate refusal directions: difference of means at every (post-instruction position, layer).

Activations are captured with pre-hooks on every decoder block (resid_pre[l]) at the last n_eoi
positions (valid for every row under left padding), cast to float32 on the device and accumulated in
float64 running sums, batch by batch: nothing but the sums is ever held (spec §2.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from alignlab.errors import AlignlabError
from alignlab.models.anatomy import map_model
from alignlab.models.chat import ChatFormat
from alignlab.models.hooks import hook_context
from alignlab.progress import progress
from alignlab.refusal.forward import batches, last_logprobs
from alignlab.refusal.score import refusal_score


class MeanAccumulator:
    """Float64 running sum and count of [n_pos, n_layers, d] activations."""

    def __init__(self, n_pos: int, n_layers: int, d: int) -> None:
        self.total = torch.zeros(n_pos, n_layers, d, dtype=torch.float64)
        self.count = 0

    def add(self, acts: torch.Tensor) -> None:
        """acts: [batch, n_pos, n_layers, d]"""
        if not torch.isfinite(acts).all():
            raise AlignlabError("non-finite activations (NaN/inf) while extracting directions: check the model dtype")
        self.total += acts.double().sum(0).cpu()
        self.count += acts.shape[0]

    def mean(self) -> torch.Tensor:
        if self.count == 0:
            raise AlignlabError("no prompts left to average (all filtered out?): pass more prompts or --no-filter-baseline")
        return self.total / self.count


@dataclass(frozen=True)
class DirectionSet:
    r: torch.Tensor
    """Un-normalised candidates r[p, l] = mean_harmful - mean_harmless: [n_pos, n_layers, d] float64."""
    mean_harmful: torch.Tensor
    mean_harmless: torch.Tensor
    n_harmful: int
    n_harmless: int
    scores_harmful: torch.Tensor
    """Refusal score of every harmful train prompt (before filtering): [n]"""
    scores_harmless: torch.Tensor


def _capture_means(
    model: torch.nn.Module,
    fmt: ChatFormat,
    texts: Sequence[str],
    refusal_ids: Sequence[int],
    keep_sign: float,
    filter_baseline: bool,
    batch_size: int,
    desc: str,
) -> tuple[MeanAccumulator, torch.Tensor]:
    anatomy = map_model(model)
    n_pos, n_layers = fmt.n_eoi, anatomy.n_layers
    acc = MeanAccumulator(n_pos, n_layers, anatomy.d_model)
    captured: dict[int, torch.Tensor] = {}

    def grab(x: torch.Tensor, layer: int) -> None:
        # a copy: a view (.float() of float32 is one) would keep the whole [batch, seq, d] input of every layer
        # alive until the forward ends (144 MB at 32 prompts on SmolLM2)
        captured[layer] = x[:, -n_pos:, :].to(torch.float32, copy=True)  # [batch, n_pos, d]
        return None

    device = next(model.parameters()).device
    scores = []
    hooks = [("block_in", layer, grab) for layer in range(n_layers)]
    with hook_context(model, hooks, anatomy):
        for _, chunk in progress(list(batches(texts, batch_size)), desc, unit="batch"):
            enc = fmt.encode(chunk, device=device, strict=False)
            s = refusal_score(last_logprobs(model, enc), refusal_ids).cpu()
            acts = torch.stack([captured[layer] for layer in range(n_layers)], dim=2)  # [b, n_pos, L, d]
            keep = (s * keep_sign > 0) if filter_baseline else torch.ones_like(s, dtype=torch.bool)
            if keep.any():
                acc.add(acts[keep.to(acts.device)])
            full = torch.full((len(chunk),), float("nan"), dtype=torch.float64)
            full[torch.tensor(enc.kept)] = s
            scores.append(full)
            captured.clear()
    return acc, torch.cat(scores)


def extract_directions(
    model: torch.nn.Module,
    fmt: ChatFormat,
    harmful: Sequence[str],
    harmless: Sequence[str],
    refusal_ids: Sequence[int],
    *,
    filter_baseline: bool = True,
    min_after_filter: int = 32,
    batch_size: int = 32,
) -> DirectionSet:
    """Difference of means over train prompts. With ``filter_baseline``, harmful prompts the model already
    answers (s <= 0) and harmless prompts it refuses (s >= 0) are dropped, unless fewer than
    ``min_after_filter`` would remain on a side (then that side is unfiltered, spec §2.6)."""
    if not harmful or not harmless:
        raise AlignlabError("empty prompt set: both harmful and harmless train prompts are needed")
    sides = []
    for texts, sign, desc in ((harmful, 1.0, "extract harmful"), (harmless, -1.0, "extract harmless")):
        acc, scores = _capture_means(model, fmt, texts, refusal_ids, sign, filter_baseline, batch_size, desc)
        if filter_baseline and acc.count < min(min_after_filter, len(texts)):
            acc, scores = _capture_means(model, fmt, texts, refusal_ids, sign, False, batch_size, desc)
        sides.append((acc, scores))
    (acc_h, s_h), (acc_b, s_b) = sides
    mean_h, mean_b = acc_h.mean(), acc_b.mean()
    r = mean_h - mean_b
    if not torch.isfinite(r).all():
        raise AlignlabError("the difference of means is not finite: check the model dtype and prompts")
    return DirectionSet(r, mean_h, mean_b, acc_h.count, acc_b.count, s_h, s_b)


def unit(r: torch.Tensor) -> torch.Tensor:
    """r̂ = r / ‖r‖ along the last axis (‖r‖ floored at 1e-8; exactly unit, unlike r/(‖r‖+1e-8))."""
    return r / r.norm(dim=-1, keepdim=True).clamp_min(1e-8)
