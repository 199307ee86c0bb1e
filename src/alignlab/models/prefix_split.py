"""Split a left-padded batch into the rows' shared token prefix and their remaining tokens (issue 19).

Chat prompts start with the same template tokens (SmolLM2's system turn is 25 of a prompt's ~40 tokens). The prefix
can run once as one row into a KV cache that is then repeated over the batch; each row's remaining tokens follow,
left-padded *after* the prefix (mask zeros between prefix and text) with position ids that continue the prefix's,
so every real token attends to the same keys at the same positions as in the full left-padded forward. Anything
that acts position by position (our hooks) sees the same values.

Not equivalent under a sliding attention window shorter than the sequence (the pads sit in another place inside
the window); ``fits_window`` says when the split is safe for a given total length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def common_prefix(rows: list[torch.Tensor]) -> int:
    """Length of the longest token prefix shared by every 1-D id tensor in ``rows``."""
    n = min(int(r.numel()) for r in rows)
    first = rows[0][:n]
    same = torch.ones(n, dtype=torch.bool, device=first.device)
    for row in rows[1:]:
        same &= row[:n] == first
    differ = (~same).nonzero()
    return int(differ[0]) if differ.numel() else n


@dataclass(frozen=True)
class PrefixSplit:
    prefix: torch.Tensor
    """[1, p] the shared prefix ids."""
    suffix: torch.Tensor
    """[b, s] each row's remaining ids, left-padded (pad slots hold 0 and are masked)."""
    mask: torch.Tensor
    """[b, p + s] attention mask over prefix + suffix columns."""
    positions: torch.Tensor
    """[b, s] position ids of the suffix columns (p, p+1, ... for each row's real tokens)."""
    full_positions: int
    """Token positions of the full left-padded batch (b x t), for the saved-fraction report."""

    @property
    def p(self) -> int:
        return int(self.prefix.shape[1])

    @property
    def saved_fraction(self) -> float:
        return 1.0 - (self.p + self.suffix.numel()) / self.full_positions


ENABLED = True
"""Module switch: False makes ``split_prefix`` and ``packing.pack_rows`` return None, so every caller runs full forwards (bench A/B runs)."""


def shared_length(rows: list[torch.Tensor], min_prefix: int) -> int | None:
    """The length p of the prefix every unpadded 1-D id row shares (at most the shortest row's length - 1, so each
    row keeps a token of its own); None when sharing is off (``ENABLED``), fewer than 2 rows, or p < ``min_prefix``."""
    if not ENABLED or len(rows) < 2:
        return None
    shortest = min(int(r.numel()) for r in rows)
    if shortest < 2:
        return None
    p = min(common_prefix(rows), shortest - 1)
    return p if p >= min_prefix else None


def unpadded_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  min_prefix: int) -> tuple[list[torch.Tensor], int] | None:
    """The rows of a left-padded batch without padding, and ``shared_length`` of them; None where that is None."""
    if not ENABLED:
        return None
    t = input_ids.shape[1]
    rows = [input_ids[i, t - int(n):] for i, n in enumerate(attention_mask.sum(1).tolist())]
    p = shared_length(rows, min_prefix)
    return None if p is None else (rows, p)


def suffix_batch(rows: list[torch.Tensor], p: int,
                 mask_dtype: torch.dtype = torch.long) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's tokens after the shared prefix, left-padded after it: ids [b, s] (pads hold 0), the attention
    mask over prefix + suffix columns [b, p + s], and the suffix columns' position ids [b, s] (p, p+1, ...)."""
    from alignlab.refusal.forward import position_ids

    s = max(int(r.numel()) for r in rows) - p
    suffix = rows[0].new_zeros((len(rows), s))
    smask = torch.zeros((len(rows), s), dtype=mask_dtype, device=rows[0].device)
    for i, row in enumerate(rows):
        tail = row[p:]
        suffix[i, s - tail.numel():] = tail
        smask[i, s - tail.numel():] = 1
    mask = torch.cat([smask.new_ones((len(rows), p)), smask], dim=1)
    return suffix, mask, p + position_ids(smask)


def split_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor, min_prefix: int = 4) -> PrefixSplit | None:
    """The split of a left-padded batch ([b, t]), or None when fewer than ``min_prefix`` tokens (or < 2 rows)
    are shared. Every row keeps at least one token after the prefix."""
    found = unpadded_rows(input_ids, attention_mask, min_prefix)
    if found is None:
        return None
    rows, p = found
    suffix, mask, positions = suffix_batch(rows, p, attention_mask.dtype)
    return PrefixSplit(rows[0][:p].unsqueeze(0), suffix, mask, positions, input_ids.numel())


def sliding_window(model: Any) -> int | None:
    """The model's sliding attention window in tokens, or None when it attends to the whole sequence."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    window = getattr(config, "sliding_window", None)
    return int(window) if window else None


def fits_window(model: Any, total_len: int) -> bool:
    """False when the model attends through a sliding window shorter than ``total_len`` columns."""
    window = sliding_window(model)
    return window is None or window >= total_len


def run_prefix(model: Any, prefix: torch.Tensor, cache: Any, cache_kwarg: str) -> None:
    """Run the shared prefix ([1, p] ids) as one row into ``cache``."""
    ones = torch.ones_like(prefix)
    model(input_ids=prefix, attention_mask=ones, position_ids=torch.arange(prefix.shape[1], device=prefix.device)[None],
          logits_to_keep=1, use_cache=True, **{cache_kwarg: cache})


def prefill(model: Any, split: PrefixSplit, cache: Any, cache_kwarg: str) -> torch.Tensor:
    """Run the prefix (one row) into ``cache``, repeat it over the batch, run the suffixes; last-position logits
    [b, vocab]. The caller decodes on with ``split.mask`` (extended by ones) and positions after ``positions``."""
    run_prefix(model, split.prefix, cache, cache_kwarg)
    cache.batch_repeat_interleave(split.suffix.shape[0])
    return model(input_ids=split.suffix, attention_mask=split.mask, position_ids=split.positions, logits_to_keep=1,
                 use_cache=True, **{cache_kwarg: cache}).logits[:, -1]
