"""Batched forward passes that return last-position log-probabilities (the only logits selection needs)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch

from alignlab.models.chat import ChatFormat, Encoded


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding ([batch, seq]); matters for absolute position embeddings (GPT-2)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class ForwardCounter:
    """Counts batched forward passes and ``generate`` calls (the spec's selection-cost assertions)."""

    def __init__(self) -> None:
        self.forwards = 0
        self.generates = 0


COUNTER = ForwardCounter()


def last_logprobs(model: torch.nn.Module, enc: Encoded, rows: slice | torch.Tensor | None = None) -> torch.Tensor:
    """Float64 log-softmax of the next-token logits at the last prompt position: [batch, vocab] (the ``rows``
    of the batch only, when given)."""
    ids, mask = enc.input_ids, enc.attention_mask
    if rows is not None:
        ids, mask = ids[rows], mask[rows]
    with torch.no_grad():
        logits = kept_logits(model, ids, mask, 1)
    return torch.log_softmax(logits[:, -1, :].double(), dim=-1)


def kept_logits(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, keep: int) -> torch.Tensor:
    """Logits of the last ``keep`` positions of left-padded rows, no KV cache: [batch, keep, vocab]."""
    COUNTER.forwards += 1
    kw = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids(mask), "use_cache": False}
    try:
        out = model(**kw, logits_to_keep=keep)
    except TypeError:  # models without logits_to_keep
        out = model(**kw)
    return out.logits[:, -keep:]


def batches(texts: Sequence[str], batch_size: int) -> Iterator[tuple[int, list[str]]]:
    for start in range(0, len(texts), batch_size):
        yield start, list(texts[start:start + batch_size])


def logprobs_for(
    model: torch.nn.Module,
    fmt: ChatFormat,
    texts: Sequence[str],
    batch_size: int,
    context: AbstractContextManager | None = None,
) -> torch.Tensor:
    """Last-position log-probs for every text ([n, vocab] float64), optionally inside a hook context."""
    device = next(model.parameters()).device
    outs = []
    with context or nullcontext():
        for _, chunk in batches(texts, batch_size):
            enc = fmt.encode(chunk, device=device, strict=False)
            outs.append(last_logprobs(model, enc).cpu())
    return torch.cat(outs)
