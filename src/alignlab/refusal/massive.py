"""Massive-activation dimensions, kept out of every candidate direction.

Some models carry a few residual coordinates hundreds of times larger than the rest on every token (Sun et al.
2024, "Massive activations in large language models"). Gemma-3-270M has six: at the post-instruction tokens their
harmless mean is 400-1650 times the median coordinate's (SmolLM2-135M: at most 121 times, none flagged). A
difference of means picks up their small relative changes as large absolute ones (78 % of |r|² at layer 6,
position -2), and projecting such an r out of every token's residual stream moves those coordinates, which the
model needs everywhere: measured on gemma3-270m-refusal, every candidate's first-token KL on harmless prompts was
20-30 and the ablated replies were gibberish. Zeroing those coordinates of r (6 of 640) brings the lowest-KL
candidates to 0.006-0.03 and leaves an ablation that bypasses refusal with fluent replies.
"""

from __future__ import annotations

import torch

from alignlab.errors import AlignlabError


def massive_dims(means: torch.Tensor, ratio: float) -> list[int]:
    """Coordinates whose |mean| exceeds ``ratio`` times the median |coordinate| of the same mean vector, at any
    (position, layer); means: [..., d] (the harmless means of the extract stage, [n_pos, n_layers, d]).
    ``ratio`` 0 turns the mask off."""
    if ratio < 0:
        raise AlignlabError(f"--massive must be >= 0 (got {ratio})")
    if ratio == 0:
        return []
    a = means.detach().double().abs().reshape(-1, means.shape[-1])  # [P*L, d]
    median = a.median(dim=-1, keepdim=True).values.clamp_min(1e-12)
    hit = (a > ratio * median).any(dim=0)  # [d]
    return hit.nonzero().flatten().tolist()


def mask_dims(r: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """A copy of r [..., d] with the given coordinates set to 0 (r itself when there are none)."""
    if not dims:
        return r
    out = r.clone()
    out[..., dims] = 0
    return out


__all__ = ["mask_dims", "massive_dims"]
