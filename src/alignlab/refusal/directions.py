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
from alignlab.models.chat import ChatFormat, Encoded
from alignlab.models.hooks import hook_context
from alignlab.progress import progress
from alignlab.refusal.forward import COUNTER, batches, last_logprobs
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


class _Captured:
    """block_in activations of one forward at each row's last ``n_pos`` positions: under left padding the last
    columns, in a pack the columns ``cols`` [k, n_pos] of each row."""

    def __init__(self, n_pos: int) -> None:
        self.n_pos = n_pos
        self.cols: torch.Tensor | None = None
        self.acts: dict[int, torch.Tensor] = {}

    def grab(self, x: torch.Tensor, layer: int) -> None:
        # a copy: a view (.float() of float32 is one) would keep the whole [batch, seq, d] input of every layer
        # alive until the forward ends (144 MB at 32 prompts on SmolLM2)
        picked = x[:, -self.n_pos:, :] if self.cols is None else x[0][self.cols]  # [b | k, n_pos, d]
        self.acts[layer] = picked.to(torch.float32, copy=True)
        return None

    def stacked(self, n_layers: int) -> torch.Tensor:
        out = torch.stack([self.acts[layer] for layer in range(n_layers)], dim=2)  # [b, n_pos, L, d]
        self.acts.clear()
        return out


def _padded_pass(model: torch.nn.Module, enc: Encoded, cap: _Captured, n_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs [b, vocab] and activations [b, n_pos, L, d] from the left-padded forward."""
    cap.cols = None
    return last_logprobs(model, enc), cap.stacked(n_layers)


def _packed_pass(model: torch.nn.Module, enc: Encoded, cap: _Captured,
                 n_layers: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The same from padding-free packs (the template prefix once per pack, ``models.packing``); None where the
    rows share no prefix or a row has fewer own tokens than the positions captured."""
    from alignlab.models.packing import pack_logits, window_packs

    packs = window_packs(model, enc.input_ids, enc.attention_mask)
    if packs is None:
        return None
    offsets = torch.arange(cap.n_pos, device=enc.input_ids.device) - cap.n_pos + 1  # [n_pos]
    cols = [pk.last[:, None] + offsets for pk in packs]  # [k, n_pos] per pack
    if any(not bool((pk.segment[c] == torch.arange(len(pk.rows), device=c.device)[:, None]).all())
           for pk, c in zip(packs, cols)):
        return None
    lps, acts = [], []
    with torch.no_grad():
        for pk, c in zip(packs, cols):
            cap.cols = c
            COUNTER.forwards += 1
            lps.append(torch.log_softmax(pack_logits(model, pk).double(), dim=-1))  # [k, vocab]
            acts.append(cap.stacked(n_layers))  # [k, n_pos, L, d]
    cap.cols = None
    order = torch.tensor([row for pk in packs for row in pk.rows]).argsort()  # pack order -> batch order
    return torch.cat(lps)[order.to(lps[0].device)], torch.cat(acts)[order.to(acts[0].device)]


def _agree(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor], tol: float = 1e-3) -> bool:
    """Packed and padded passes agree: log-probs within ``tol``, activations within ``tol`` relative (norm)."""
    return bool((a[0] - b[0]).abs().max() < tol) and float((a[1] - b[1]).norm()) <= tol * float(b[1].norm())


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
    cap = _Captured(n_pos)
    device = next(model.parameters()).device
    scores = []
    packed: bool | None = None  # None: not yet checked against the padded forward
    hooks = [("block_in", layer, cap.grab) for layer in range(n_layers)]
    with hook_context(model, hooks, anatomy):
        for _, chunk in progress(list(batches(texts, batch_size)), desc, unit="batch"):
            enc = fmt.encode(chunk, device=device, strict=False)
            got = _packed_pass(model, enc, cap, n_layers) if packed is not False else None
            if got is not None and packed is None:  # the first packed batch is checked once
                full = _padded_pass(model, enc, cap, n_layers)
                packed = _agree(got, full)
                got = got if packed else full
            lp, acts = got if got is not None else _padded_pass(model, enc, cap, n_layers)
            s = refusal_score(lp, refusal_ids).cpu()
            keep = (s * keep_sign > 0) if filter_baseline else torch.ones_like(s, dtype=torch.bool)
            if keep.any():
                acc.add(acts[keep.to(acts.device)])
            full_s = torch.full((len(chunk),), float("nan"), dtype=torch.float64)
            full_s[torch.tensor(enc.kept)] = s
            scores.append(full_s)
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
