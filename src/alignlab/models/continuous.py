"""Continuous batching for greedy decoding (issue 19 §1).

A batch decoded to its end spends its last steps on the few rows still writing, and on a CPU a 4-row decoding step
costs nearly what a 64-row one does (both read every weight). Here a row that finishes is replaced by a waiting
prompt: new rows are prefilled (the prompts' shared template prefix comes from one cached copy, computed once per
call; only each row's own tokens run, laid end to end in padding-free packs under a block mask, their cache then
regrouped row-wise) and merged into the live KV cache, left-padded to its width, so steps run full batches until
the queue is empty.

Each row's tokens are those of decoding it alone: it attends to its own prompt and reply at its own positions;
the pads of other rows and of the merge are masked out. Columns that are padding in every live row are cut from
the left, so the cache never grows wider than the longest live row. The caller checks ``supported`` first (a
sliding window shorter than prompt + reply, or a cache whose layers do not hold plain [batch, heads, seq, dim]
tensors, takes the per-batch loop of ``models.generate``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from alignlab.models.generate import _cache_kwarg
from alignlab.models.packing import build_pack, groups_of
from alignlab.models.prefix_split import fits_window, run_prefix, shared_length, sliding_window, suffix_batch

Rows = list[tuple[list[int], bool]]


class Unsupported(Exception):
    """The model's KV cache cannot be merged or trimmed row-wise; use the per-batch loop."""


@dataclass
class Live:
    cache: Any
    """DynamicCache over the live rows: per layer [b, kv_heads, T, head_dim]."""
    mask: torch.Tensor
    """[b, T] 1 on each row's real columns."""
    nxt: torch.Tensor
    """[b, 1] position id of each row's next token."""
    logits: torch.Tensor
    """[b, vocab] next-token logits."""
    rows: list[int]
    """batch row -> request index."""


PACK_TOKENS = 256
"""Own tokens per packed prefill: the dense block mask's attention grows with the pack, the linear layers' cost
does not (at 256 the masked attention adds ~8 % to a 135M model's linear FLOPs)."""


ENABLED = True
"""Module switch: False sends every call to the per-batch loop (bench A/B runs)."""


def supported(model: Any, rows: list[torch.Tensor], max_new_tokens: int) -> bool:
    """Whether streaming applies to a model ``generate._fast_ok`` accepts: its window covers prompt + reply."""
    longest = max((int(r.numel()) for r in rows), default=0)
    return ENABLED and fits_window(model, longest + max_new_tokens)


@torch.no_grad()
def greedy_stream(model: Any, rows: list[torch.Tensor], max_new_tokens: int, eos: list[int], batch_size: int,
                  on_done: Callable[[int], None] | None = None, min_prefix: int = 4) -> Rows:
    """Greedy new tokens of each 1-D id row (without its stop token) and whether it stopped, at most
    ``batch_size`` rows decoding at once. ``on_done(k)`` is told each time k rows finish."""
    n = len(rows)
    if max_new_tokens < 1:
        return [([], False) for _ in range(n)]
    tokens: list[list[int]] = [[] for _ in range(n)]
    finished, steps = [False] * n, [0] * n
    stop = torch.tensor(eos, dtype=torch.long)
    p = shared_length(rows, min_prefix) or 0
    device = rows[0].device if rows else torch.device("cpu")
    prefix_kv = _prefix_kv(model, rows[0][:p].to(device)) if p else None
    queue, live = deque(range(n)), None
    refill = max(1, batch_size // 4)  # admit new rows once this many slots are free (one prefill per refill)
    while queue or live is not None:
        free = batch_size - (0 if live is None else len(live.rows))
        if queue and (live is None or free >= min(refill, len(queue))):
            take = [queue.popleft() for _ in range(min(free, len(queue)))]
            new = _admit(model, [rows[i] for i in take], take, p, prefix_kv)
            live = new if live is None else _merge(model, live, new)
        assert live is not None
        choice = live.logits.argmax(-1)  # [b]
        done = torch.isin(choice, stop.to(choice.device))
        for b, (t, d) in enumerate(zip(choice.tolist(), done.tolist())):
            r = live.rows[b]
            steps[r] += 1
            if d:
                finished[r] = True
            else:
                tokens[r].append(t)
        out = done.cpu() | torch.tensor([steps[r] >= max_new_tokens for r in live.rows])
        if bool(out.any()):
            if on_done is not None:
                on_done(int(out.sum()))
            if bool(out.all()):
                live = None
                continue
            live = _select(model, live, (~out).nonzero().squeeze(-1).to(choice.device))
            choice = choice[(~out).to(choice.device)]
        live = _step(model, live, choice)
    return list(zip(tokens, finished))


def _new_cache(model: Any, kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> Any:
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv, config=model.config) if kv else DynamicCache(config=model.config)


def _tensors(cache: Any, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values) [b, h, T, d] of ``cache``, checked to be ``width`` columns wide."""
    layers = getattr(cache, "layers", None)
    if not layers:
        raise Unsupported("no cache layers")
    kv = []
    for layer in layers:
        k, v = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not (isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor) and k.ndim == 4 and v.ndim == 4):
            raise Unsupported("cache layer without [b, h, T, d] keys and values")
        if k.shape[2] != width or v.shape[2] != width:
            raise Unsupported("cache layer narrower than the sequence (sliding window)")
        kv.append((k, v))
    return kv


def _prefix_kv(model: Any, prefix: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The shared prefix ([p] ids) run once as one row: per-layer (keys, values) [1, h, p, d]."""
    cache = _new_cache(model)
    run_prefix(model, prefix[None], cache, _cache_kwarg(model))
    return _tensors(cache, prefix.numel())


def _admit(model: Any, rows: list[torch.Tensor], index: list[int], p: int,
           prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None) -> Live:
    """Prefill new rows (their tokens after the shared prefix) as padding-free packs of ``PACK_TOKENS``; one
    ``Live`` over them."""
    live: Live | None = None
    own = [int(r.numel()) - p for r in rows]
    for group in groups_of(own, min(PACK_TOKENS, _window_room(model, p))):
        try:
            new = _admit_packed(model, [rows[i] for i in group], [index[i] for i in group], p, prefix_kv)
        except Unsupported:  # a cache we cannot regroup (e.g. a sliding layer's): the left-padded prefill
            new = _admit_padded(model, [rows[i] for i in group], [index[i] for i in group], p, prefix_kv)
        live = new if live is None else _merge(model, live, new)
    assert live is not None
    return live


def _window_room(model: Any, p: int) -> int:
    window = sliding_window(model)
    return max(1, window - p) if window else 1 << 30


def _admit_packed(model: Any, rows: list[torch.Tensor], index: list[int], p: int,
                  prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None) -> Live:
    """One forward over the rows' own tokens laid end to end after the cached prefix (block mask: each token sees
    the prefix and its own row, positions restart at p per row), then the cache regrouped row-wise, left-padded."""
    device = rows[0].device
    lens = [int(r.numel()) - p for r in rows]
    k, s = len(rows), max(lens)
    pack = build_pack(rows, list(range(k)), p)  # the prefix is in the cache: its positions are dropped below
    ids, positions, last = pack.ids[:, p:], pack.positions[:, p:], pack.last - p  # [1, n], [1, n], [k]
    mask = pack.mask(next(model.parameters()).dtype)[:, :, p:]  # [1, 1, n, p + n]: the own tokens' queries
    cache = _new_cache(model, prefix_kv)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=last,
                   use_cache=True, **{_cache_kwarg(model): cache}).logits[0]  # [k, vocab]
    # column j of row i (right-aligned in s columns) is packed column start_i + j - (s - len_i); pads read column 0
    start = torch.tensor([0] + lens[:-1], device=device).cumsum(0)  # [k]
    j = torch.arange(s, device=device)[None] - (s - torch.tensor(lens, device=device))[:, None]  # [k, s]
    real = j >= 0
    gather = torch.where(real, start[:, None] + j, 0).reshape(-1)  # [k * s]
    kv = []
    for keys, values in _tensors(cache, int(pack.ids.shape[1])):  # [1, h, p + n, d]
        regrouped = []
        for x in (keys, values):
            tail = x[0, :, p:].index_select(1, gather).unflatten(1, (k, s)).transpose(0, 1)  # [k, h, s, d]
            regrouped.append(torch.cat([x[:, :, :p].expand(k, -1, -1, -1), tail], dim=2))  # [k, h, p + s, d]
        kv.append((regrouped[0], regrouped[1]))
    mask2 = torch.cat([real.new_ones((k, p)), real], dim=1).long()  # [k, p + s]
    nxt = torch.tensor(lens, device=device)[:, None] + p  # [k, 1]
    return Live(_new_cache(model, kv), mask2, nxt, logits, list(index))


def _admit_padded(model: Any, rows: list[torch.Tensor], index: list[int], p: int,
                  prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None) -> Live:
    """Prefill new rows: each row's tokens after the shared prefix, left-padded after it ([k, p + s])."""
    ids, mask, positions = suffix_batch(rows, p)  # [k, s], [k, p + s], [k, s]
    k = len(rows)
    if prefix_kv is None:
        cache = _new_cache(model)
    else:
        cache = _new_cache(model, [(kk.expand(k, -1, -1, -1), vv.expand(k, -1, -1, -1)) for kk, vv in prefix_kv])
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1, use_cache=True,
                   **{_cache_kwarg(model): cache}).logits[:, -1]  # [k, vocab]
    _tensors(cache, mask.shape[1])  # fail early on caches we cannot merge
    return Live(cache, mask, positions[:, -1:] + 1, logits, list(index))


def _pad_left(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - x.shape[dim]
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def _merge(model: Any, a: Live, b: Live) -> Live:
    """One batch of ``a``'s rows then ``b``'s, both right-aligned to the wider cache (left pads masked)."""
    width = max(a.mask.shape[1], b.mask.shape[1])
    kv_a, kv_b = _tensors(a.cache, a.mask.shape[1]), _tensors(b.cache, b.mask.shape[1])
    kv = [(torch.cat([_pad_left(ka, width, 2), _pad_left(kb, width, 2)]),
           torch.cat([_pad_left(va, width, 2), _pad_left(vb, width, 2)])) for (ka, va), (kb, vb) in zip(kv_a, kv_b)]
    mask = torch.cat([_pad_left(a.mask, width, 1), _pad_left(b.mask, width, 1)])
    return Live(_new_cache(model, kv), mask, torch.cat([a.nxt, b.nxt]), torch.cat([a.logits, b.logits]),
                a.rows + b.rows)


def _select(model: Any, live: Live, keep: torch.Tensor) -> Live:
    """The rows ``keep`` ([b'] indices) of ``live``, with columns that are padding in all of them cut off."""
    mask = live.mask[keep]
    first = int(mask.any(0).nonzero()[0])
    if first == 0:
        live.cache.batch_select_indices(keep)
        cache = live.cache
    else:
        kv = _tensors(live.cache, live.mask.shape[1])
        cache = _new_cache(model, [(k[keep, :, first:], v[keep, :, first:]) for k, v in kv])
    return Live(cache, mask[:, first:], live.nxt[keep], live.logits[keep], [live.rows[i] for i in keep.tolist()])


def _step(model: Any, live: Live, choice: torch.Tensor) -> Live:
    """Feed each row its chosen token ([b]); the next logits."""
    mask = torch.cat([live.mask, live.mask.new_ones((live.mask.shape[0], 1))], dim=1)  # [b, T + 1]
    logits = model(input_ids=choice[:, None], attention_mask=mask, position_ids=live.nxt, use_cache=True,
                   **{_cache_kwarg(model): live.cache}).logits[:, -1]
    return Live(live.cache, mask, live.nxt + 1, logits, live.rows)


__all__ = ["Unsupported", "greedy_stream", "supported"]
