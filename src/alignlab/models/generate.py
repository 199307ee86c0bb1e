"""Greedy, batched, left-padded generation (spec §3.1): stops at EOS / end-of-turn, skips special tokens.

Shared by the refusal evaluation, the search, the organism recipe and the interactive ``refusal ablate`` chat;
hook contexts (ablation, addition) wrap calls to it, since hooks fire on every decoding step.

Our own decoding loop instead of ``model.generate``: one prefill, then one token per step with a KV cache,
and rows that reached end-of-turn leave the batch at once (their cache rows are dropped), so a batch costs
what its live rows cost, not what its longest reply costs. Greedy tokens equal ``model.generate``'s (tested
per family); models whose generation config asks for logits processing that changes greedy choices
(repetition penalty, banned n-grams, suppressed tokens), and models whose forward lacks a KV cache, use
``model.generate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Reply:
    text: str
    finished: bool
    """True when generation stopped at EOS / end-of-turn within the token budget."""


@torch.no_grad()
def generate_greedy(model: Any, fmt: Any, prompts: list[str], max_new_tokens: int,
                    batch_size: int = 32, progress: bool = True) -> list[Reply]:
    """Greedy, batched, left-padded generation (spec §3.1); stops at EOS, skips special tokens."""
    from alignlab.progress import progress_bar

    eos = _stop_ids(model, fmt.tokenizer)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    out: list[Reply | None] = [None] * len(prompts)
    device = next(model.parameters()).device
    with progress_bar(len(prompts), "greedy replies", "prompt", enabled=progress) as update:
        if not (_fast_ok(model) and _stream(model, fmt, prompts, order, max_new_tokens, eos, batch_size, device,
                                            out, update)):
            for start in range(0, len(order), batch_size):
                _generate_batch(model, fmt, prompts, order[start:start + batch_size], max_new_tokens, eos, device,
                                out)
                update(min(batch_size, len(order) - start))
    return [r for r in out if r is not None]


def _stream(model: Any, fmt: Any, prompts: list[str], order: list[int], max_new_tokens: int, eos: list[int],
            batch_size: int, device: torch.device, out: list[Reply | None], update: Any) -> bool:
    """Every prompt through ``models.continuous`` (finished rows replaced by waiting ones); False (nothing
    written) where the model's cache does not allow it."""
    from alignlab.models.continuous import Unsupported, greedy_stream, supported

    rows: list[torch.Tensor] = []
    index: list[int] = []  # row -> prompt index
    alone: list[int] = []  # boundary mismatch: rendered each alone
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = fmt.encode([prompts[i] for i in idx], device=device, strict=False)
        lengths = enc.attention_mask.sum(1).tolist()
        for row, j in enumerate(enc.kept):
            rows.append(enc.input_ids[row, enc.input_ids.shape[1] - int(lengths[row]):])
            index.append(idx[j])
        alone += [idx[j] for j in sorted(set(range(len(idx))) - set(enc.kept))]
    if not rows or not supported(model, rows, max_new_tokens):
        return False
    try:
        got = greedy_stream(model, rows, max_new_tokens, eos, batch_size, on_done=update)
    except Unsupported:
        return False
    tok = fmt.tokenizer
    for i, (ids, finished) in zip(index, got):
        out[i] = Reply(tok.decode(ids, skip_special_tokens=True).strip(), finished)
    for i in alone:
        out[i] = generate_greedy(model, fmt, [prompts[i]], max_new_tokens, 1, False)[0]
        update(1)
    return True


def _generate_batch(model: Any, fmt: Any, prompts: list[str], idx: list[int], max_new_tokens: int,
                    eos: list[int], device: torch.device, out: list[Reply | None]) -> None:
    """Generate the replies of ``prompts[i]`` for i in ``idx`` (one left-padded batch) into ``out``."""
    tok = fmt.tokenizer
    enc = fmt.encode([prompts[i] for i in idx], device=device, strict=False)
    if _fast_ok(model):
        rows = greedy_tokens(model, enc.input_ids, enc.attention_mask, max_new_tokens, eos)
    else:
        rows = _hf_tokens(model, enc.input_ids, enc.attention_mask, max_new_tokens, eos, tok.pad_token_id)
    for row, j in enumerate(enc.kept):
        ids, finished = rows[row]
        out[idx[j]] = Reply(tok.decode(ids, skip_special_tokens=True).strip(), finished)
    for j in set(range(len(idx))) - set(enc.kept):  # boundary mismatch: render each alone
        out[idx[j]] = generate_greedy(model, fmt, [prompts[idx[j]]], max_new_tokens, 1, False)[0]


def greedy_tokens(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                  eos: list[int]) -> list[tuple[list[int], bool]]:
    """Greedy new tokens of each left-padded row ([batch, seq]) without its stop token, and whether it stopped.

    Finished rows leave the batch (and their KV-cache rows) at the step they finish."""
    from transformers import DynamicCache

    from alignlab.models.prefix_split import fits_window, prefill, split_prefix
    from alignlab.refusal.forward import position_ids

    n = input_ids.shape[0]
    tokens: list[list[int]] = [[] for _ in range(n)]
    finished = [False] * n
    live = list(range(n))  # batch row -> original row
    stop = torch.tensor(eos, device=input_ids.device, dtype=torch.long)
    mask = attention_mask.long()
    pos = position_ids(mask)  # [b, t]
    cache = DynamicCache(config=model.config)
    kw = {_cache_kwarg(model): cache, "use_cache": True}
    split = split_prefix(input_ids, mask) if fits_window(model, input_ids.shape[1] + max_new_tokens) else None
    if split is not None:  # the rows' shared template prefix is prefilled once (models/prefix_split.py)
        logits = prefill(model, split, cache, _cache_kwarg(model))  # [b, vocab]
        mask, pos = split.mask, split.positions
    else:
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=pos, logits_to_keep=1,
                       **kw).logits[:, -1]  # [b, vocab]
    nxt = pos[:, -1:] + 1  # [b, 1]
    for step in range(max_new_tokens):
        choice = logits.argmax(-1)  # [b]
        done = torch.isin(choice, stop)
        for row, (t, d) in enumerate(zip(choice.tolist(), done.tolist())):
            if d:
                finished[live[row]] = True
            else:
                tokens[live[row]].append(t)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):  # drop finished rows from every tensor and from the cache
            keep = (~done).nonzero().squeeze(-1)  # [b']
            cache.batch_select_indices(keep)
            live = [live[i] for i in keep.tolist()]
            choice, mask, nxt = choice[keep], mask[keep], nxt[keep]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # [b, t + step + 1]
        logits = model(input_ids=choice[:, None], attention_mask=mask, position_ids=nxt, **kw).logits[:, -1]
        nxt = nxt + 1
    return list(zip(tokens, finished))


def _cache_kwarg(model: Any) -> str:
    """transformers >= 5.2x names the forward's cache argument ``cache`` (``past_key_values`` is deprecated)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _hf_tokens(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
               eos: list[int], pad: int | None) -> list[tuple[list[int], bool]]:
    """The same contract through ``model.generate`` (the reference the fast loop is tested against)."""
    gen = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                         max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos)
    out = []
    for ids in gen[:, input_ids.shape[1]:].tolist():  # [batch, <= max_new_tokens]
        stops = [ids.index(t) for t in eos if t in ids]
        out.append((ids[:min(stops)] if stops else ids, bool(stops)))
    return out


def _fast_ok(model: Any) -> bool:
    """Our loop reproduces plain greedy decoding only: anything in the generation config that changes the
    greedy choice, or a model without the KV-cache interface, goes through ``model.generate``."""
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        if (gc.repetition_penalty or 1.0) != 1.0 or gc.no_repeat_ngram_size or gc.bad_words_ids:
            return False
        if gc.suppress_tokens or gc.begin_suppress_tokens or gc.forced_bos_token_id is not None:
            return False
        if gc.min_new_tokens or gc.min_length or gc.sequence_bias:
            return False
    return hasattr(model, "config")


def _stop_ids(model: Any, tok: Any) -> list[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    return ids
