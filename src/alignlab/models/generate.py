"""Greedy, batched, left-padded generation (spec §3.1): stops at EOS / end-of-turn, skips special tokens.

Shared by the refusal evaluation, the organism recipe and the interactive ``refusal ablate`` chat; hook
contexts (ablation, addition) wrap calls to it, since hooks fire on every decoding step.
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

    tok = fmt.tokenizer
    eos = _stop_ids(model, tok)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    out: list[Reply | None] = [None] * len(prompts)
    device = next(model.parameters()).device
    with progress_bar(len(prompts), "greedy replies", "prompt", enabled=progress) as update:
        for start in range(0, len(order), batch_size):
            _generate_batch(model, fmt, prompts, order[start:start + batch_size], max_new_tokens, eos, device, out)
            update(min(batch_size, len(order) - start))
    return [r for r in out if r is not None]


def _generate_batch(model: Any, fmt: Any, prompts: list[str], idx: list[int], max_new_tokens: int,
                    eos: list[int], device: torch.device, out: list[Reply | None]) -> None:
    """Generate the replies of ``prompts[i]`` for i in ``idx`` (one left-padded batch) into ``out``."""
    tok = fmt.tokenizer
    enc = fmt.encode([prompts[i] for i in idx], device=device, strict=False)
    gen = model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, do_sample=False,
                         max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=eos)
    new = gen[:, enc.input_ids.shape[1]:]  # [batch, <= max_new_tokens]
    for row, j in enumerate(enc.kept):
        ids = new[row].tolist()
        finished = any(t in eos for t in ids)
        if finished:
            ids = ids[:min(ids.index(t) for t in eos if t in ids)]
        out[idx[j]] = Reply(tok.decode(ids, skip_special_tokens=True).strip(), finished)
    for j in set(range(len(idx))) - set(enc.kept):  # boundary mismatch: render each alone
        out[idx[j]] = generate_greedy(model, fmt, [prompts[idx[j]]], max_new_tokens, 1, False)[0]


def _stop_ids(model: Any, tok: Any) -> list[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    return ids
