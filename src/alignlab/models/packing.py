"""Pack a left-padded batch into a few padding-free sequences that share the rows' common prefix (issue 19 §2).

Scoring an intervention needs one next-token distribution per prompt, and the prompts of a chat model start with
the same template tokens. A pack is one sequence: the shared prefix once, then each row's own tokens one after
another, with a block attention mask (every row's tokens see the prefix and their own earlier tokens, nothing of
the other rows) and position ids that restart after the prefix for every row. Each real token then sees the same
keys at the same positions as in the full left-padded forward, and no position is spent on padding or on a second
copy of the prefix. Rows go into packs of about ``pack_tokens`` positions, so the dense mask's attention cost stays
small next to the linear layers.

The mask is a 4-D additive float mask, which transformers passes to the attention as given: it replaces the
model's own causal and sliding-window masks, so ``fits_window`` must hold for the pack length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignlab.models.prefix_split import fits_window, sliding_window, unpadded_rows


@dataclass(frozen=True)
class Pack:
    ids: torch.Tensor
    """[1, n] prefix then every row's own tokens."""
    positions: torch.Tensor
    """[1, n] 0..p-1 for the prefix, p.. again for each row."""
    segment: torch.Tensor
    """[n] -1 for the prefix, else the index of the row within ``rows``."""
    last: torch.Tensor
    """[k] column of each row's last token."""
    rows: list[int]
    """Batch rows (indices into the left-padded batch) in this pack, in order."""

    def mask(self, dtype: torch.dtype) -> torch.Tensor:
        """[1, 1, n, n] additive mask: 0 where a query may attend, the dtype's minimum elsewhere."""
        n = self.ids.shape[1]
        col = torch.arange(n, device=self.ids.device)
        causal = col[None, :] <= col[:, None]  # [n, n]
        seg = self.segment
        visible = (seg[None, :] == -1) | (seg[None, :] == seg[:, None])
        allowed = causal & visible
        out = torch.zeros((n, n), dtype=dtype, device=self.ids.device)
        out.masked_fill_(~allowed, torch.finfo(dtype).min)
        return out[None, None]


def pack_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor, pack_tokens: int = 512,
              min_prefix: int = 4) -> list[Pack] | None:
    """Packs of a left-padded batch ([b, t]); None when the rows share fewer than ``min_prefix`` tokens, or there
    are fewer than 2 rows. Every row keeps at least one token after the prefix."""
    found = unpadded_rows(input_ids, attention_mask, min_prefix)
    if found is None:
        return None
    rows, p = found
    own = [int(row.numel()) - p for row in rows]
    packs = [build_pack(rows, group, p) for group in groups_of(own, pack_tokens - p)]
    return packs


def groups_of(own: list[int], pack_tokens: int) -> list[list[int]]:
    """Consecutive row indices whose own token counts ``own`` add up to at most ``pack_tokens`` per group (a longer
    row gets a group alone)."""
    groups: list[list[int]] = [[]]
    size = 0
    for i, n in enumerate(own):
        if groups[-1] and size + n > pack_tokens:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += n
    return groups


def window_packs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 pack_tokens: int = 512, min_prefix: int = 4) -> list[Pack] | None:
    """``pack_rows`` for ``model``: packs no longer than its sliding window (the block mask replaces the model's own
    masks, window included), or None where no packing applies or a single row with the prefix exceeds the window."""
    window = sliding_window(model)
    packs = pack_rows(input_ids, attention_mask, min(pack_tokens, window or pack_tokens), min_prefix)
    if not packs or not fits_window(model, max(int(pk.ids.shape[1]) for pk in packs)):
        return None
    return packs


def build_pack(rows: list[torch.Tensor], group: list[int], p: int) -> Pack:
    """One pack of the 1-D id rows ``rows[i]`` for i in ``group``: their shared first ``p`` tokens, then each row's rest."""
    device = rows[0].device
    ids, pos, seg, last = [rows[group[0]][:p]], [torch.arange(p, device=device)], [torch.full((p,), -1)], []
    col = p
    for k, i in enumerate(group):
        own = rows[i][p:]
        ids.append(own)
        pos.append(torch.arange(p, p + own.numel(), device=device))
        seg.append(torch.full((own.numel(),), k))
        col += own.numel()
        last.append(col - 1)
    return Pack(torch.cat(ids)[None], torch.cat(pos)[None], torch.cat(seg).to(device),
                torch.tensor(last, device=device), list(group))


def pack_logits(model: torch.nn.Module, pack: Pack) -> torch.Tensor:
    """Next-token logits at the last token of each row of one pack, in ``pack.rows`` order: [k, vocab]."""
    kw = {"input_ids": pack.ids, "attention_mask": pack.mask(next(model.parameters()).dtype),
          "position_ids": pack.positions, "use_cache": False}
    try:
        return model(**kw, logits_to_keep=pack.last).logits[0]  # [k, vocab]
    except TypeError:  # models without logits_to_keep
        return model(**kw).logits[0, pack.last]


def packed_last_logits(model: torch.nn.Module, packs: list[Pack], batch: int) -> torch.Tensor:
    """Next-token logits at every row's last token, in batch-row order: [batch, vocab] (one forward per pack)."""
    out: torch.Tensor | None = None
    for pack in packs:
        logits = pack_logits(model, pack)
        if out is None:
            out = logits.new_empty((batch, logits.shape[-1]))
        out[torch.tensor(pack.rows, device=out.device)] = logits
    assert out is not None
    return out
