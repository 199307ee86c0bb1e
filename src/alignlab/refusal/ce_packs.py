"""Completion cross-entropy on padding-free packs (issue 19 §1).

The evaluation's CE scores the base model's harmless completions under every condition: prompt + completion rows of
very different lengths, all starting with the chat template's system turn. A pack (``models.packing``) holds that
shared prefix once, then each row's own prompt tokens and completion end to end under a block attention mask, with
positions restarting after the prefix, so no position is padding and the prefix is not recomputed per row; the head
runs only at the positions that predict a completion token (``logits_to_keep`` given as column indices).
"""

from __future__ import annotations

import torch

from alignlab.models.packing import Pack, build_pack, groups_of
from alignlab.models.prefix_split import common_prefix, fits_window
from alignlab.refusal.forward import COUNTER

PACK_TOKENS = 256
"""Own tokens per pack: the kept logits of a pack (~60 % of its positions x the vocabulary, float32) stay near the
2-row padded chunks' size (30 MB on SmolLM2)."""


def packed_nll(model: torch.nn.Module, rows: list[tuple[list[int], list[int]]],
               min_prefix: int = 4) -> list[tuple[float, int]] | None:
    """Per row (prompt ids, non-empty completion ids): the summed NLL of its completion tokens and their count, in
    row order; None where the rows share fewer than ``min_prefix`` prompt tokens or a pack exceeds the model's
    sliding window (the caller then runs left-padded forwards)."""
    device = next(model.parameters()).device
    if len(rows) < 2:
        return None
    seqs = [torch.tensor(a + b, device=device) for a, b in rows]
    p = min(common_prefix([torch.tensor(a) for a, _ in rows]), min(len(a) for a, _ in rows) - 1)
    if p < min_prefix:
        return None
    packs = [build_pack(seqs, group, p) for group in groups_of([len(a) + len(b) - p for a, b in rows], PACK_TOKENS)]
    if not all(fits_window(model, int(pk.ids.shape[1])) for pk in packs):
        return None
    out: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    for pk in packs:
        for row, nll in zip(pk.rows, _pack_nll(model, pk, [len(rows[i][1]) for i in pk.rows])):
            out[row] = (nll, len(rows[row][1]))
    return out


def _pack_nll(model: torch.nn.Module, pk: Pack, completion_lens: list[int]) -> list[float]:
    """Summed NLL of each row's last ``completion_lens[k]`` tokens of one pack."""
    device = pk.ids.device
    # row k's completion fills the columns last[k] - n_k + 1 .. last[k]; the column before each predicts it
    cols = torch.cat([torch.arange(int(last) - n, int(last), device=device)
                      for last, n in zip(pk.last.tolist(), completion_lens)])  # [sum n]
    targets = pk.ids[0, cols + 1]  # [sum n]
    COUNTER.forwards += 1
    kw = {"input_ids": pk.ids, "attention_mask": pk.mask(next(model.parameters()).dtype),
          "position_ids": pk.positions, "use_cache": False}
    with torch.no_grad():
        try:
            logits = model(**kw, logits_to_keep=cols).logits[0].float()  # [sum n, vocab]
        except TypeError:  # models without logits_to_keep
            logits = model(**kw).logits[0, cols].float()
    return [float(x.double().sum()) for x in token_nll(logits, targets).split(completion_lens)]


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits)[target] per position ([..., vocab] float32 logits, overwritten; [...] targets):
    logsumexp in place, so no second [..., vocab] tensor is allocated."""
    target = logits.gather(-1, targets[..., None]).squeeze(-1)  # [...]
    top = logits.amax(-1, keepdim=True)
    return logits.sub_(top).exp_().sum(-1).log_().add_(top.squeeze(-1)) - target


__all__ = ["PACK_TOKENS", "packed_nll", "token_nll"]
