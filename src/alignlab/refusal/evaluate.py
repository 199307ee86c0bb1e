"""Held-out evaluation of the refusal direction (spec §3): generations per condition, judge, rates with
Wilson intervals per category, degeneracy flags, CE on harmless completions (first-token KL: ``eval_stage._kl``).

Conditions: ``base``; ``ablated`` (hook ablation everywhere); ``edited`` (orthogonalised weights);
``added`` (+c·r at the selected layer: induces refusal). Judges see only the response.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from alignlab.data import Prompt
from alignlab.models.chat import ChatFormat
from alignlab.refusal.ce_packs import packed_nll, token_nll
from alignlab.refusal.degenerate import flag_outputs, flag_rates
from alignlab.refusal.forward import COUNTER, kept_logits
from alignlab.refusal.judge import Judge
from alignlab.refusal.stats import Rate, mcnemar_exact, rate_of


@dataclass
class Generated:
    condition: str
    split: str
    prompts: list[Prompt]
    responses: list[str]
    finished: list[bool]
    refused: list[bool]

    @property
    def rate(self) -> Rate:
        return rate_of(self.refused)

    def per_category(self) -> dict[str, Rate]:
        cats = sorted({p.category for p in self.prompts})
        return {c: rate_of([r for p, r in zip(self.prompts, self.refused) if p.category == c]) for c in cats}

    def flags(self) -> dict[str, float]:
        return flag_rates(flag_outputs(self.responses, self.finished, [p.text for p in self.prompts]))


def generate(
    model: torch.nn.Module,
    fmt: ChatFormat,
    prompts: Sequence[Prompt],
    *,
    condition: str,
    split: str,
    judge: Judge,
    max_new_tokens: int,
    batch_size: int,
    context: Callable[[], AbstractContextManager] | None = None,
) -> Generated:
    """Greedy generations for ``prompts`` under ``context`` (a hook context factory), judged."""
    from alignlab.models.generate import generate_greedy

    texts = [p.text for p in prompts]
    with (context or nullcontext)():
        COUNTER.generates += 1
        replies = generate_greedy(model, fmt, texts, max_new_tokens, batch_size, progress=True)
    responses = [r.text for r in replies]
    verdicts = judge.judge(texts, responses)
    refused = [v.label == "refusal" for v in verdicts]
    return Generated(condition, split, list(prompts), responses, [r.finished for r in replies], refused)


CE_ROWS = 2
"""Rows per cross-entropy forward: the logits of a forward are [rows, kept positions, vocab], 50 MB at 2 rows
of 128 tokens over SmolLM2's 49,152 columns (and as much again for logsumexp), against 1.6 GB for a 64-row
evaluation batch (issue 19 §3). Measured with `bench/refusal_memory.py`, going from 8 rows to 2 did not move the
run's peak (1,148 -> 1,141 MiB; the peak was in the edit), so 2 only keeps CE further below it."""


def completion_ce(
    model: torch.nn.Module,
    fmt: ChatFormat,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int,
    context: Callable[[], AbstractContextManager] | None = None,
) -> float:
    """Mean cross-entropy (nats/token) of ``completions`` given their prompts, response tokens only.

    Forwards take at most ``CE_ROWS`` rows and keep only the logits of the positions that predict a
    completion token; -log p = logsumexp(logits) - logit[target], both in float32 then summed in float64."""
    tok = fmt.tokenizer
    rows = []
    for p, c in zip(prompts, completions):
        comp_ids = tok(c, add_special_tokens=False)["input_ids"]
        if comp_ids:
            rows.append((tok(fmt.render(p), add_special_tokens=False)["input_ids"], comp_ids))
    step = max(1, min(batch_size, CE_ROWS))
    pad = tok.pad_token_id or 0
    total, count = 0.0, 0
    with (context or nullcontext)(), torch.no_grad():
        per_row = packed_nll(model, rows) if PACKED else None  # refusal/ce_packs.py: no padding, prefix once
        if per_row is not None and _agrees(per_row[:step], _chunk_nll(model, rows[:step], pad)):
            return sum(n for n, _ in per_row) / max(sum(c for _, c in per_row), 1)
        for start in range(0, len(rows), step):
            nll_sum, n = _chunk_nll(model, rows[start:start + step], pad)
            total, count = total + nll_sum, count + n
    return total / max(count, 1)


PACKED = True
"""Module switch: False runs every CE forward on left-padded chunks (bench A/B runs)."""


def _agrees(packed: list[tuple[float, int]], padded: tuple[float, int], rel: float = 1e-4) -> bool:
    """The packed NLL of the first rows matches their left-padded forward (a model whose attention ignores the
    packs' block mask would not)."""
    nll = sum(n for n, _ in packed)
    return sum(c for _, c in packed) == padded[1] and abs(nll - padded[0]) <= rel * max(abs(padded[0]), 1.0)


def _chunk_nll(model: torch.nn.Module, rows: list[tuple[list[int], list[int]]], pad: int) -> tuple[float, int]:
    """Summed NLL of the completion tokens of ``rows`` (prompt ids, completion ids), left-padded."""
    device = next(model.parameters()).device
    width = max(len(a) + len(b) for a, b in rows)
    keep = max(len(b) for _, b in rows) + 1  # positions width-keep .. width-1 predict every completion token
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    target_mask = torch.zeros_like(ids, dtype=torch.bool)
    for i, (a, b) in enumerate(rows):
        ids[i, width - len(a) - len(b):] = torch.tensor(a + b)
        mask[i, width - len(a) - len(b):] = 1
        target_mask[i, width - len(b):] = True
    ids, mask, target_mask = ids.to(device), mask.to(device), target_mask.to(device)
    logits = kept_logits(model, ids, mask, keep)[:, :-1].float()  # [rows, keep - 1, vocab]: the last keep - 1
    targets = ids[:, width - keep + 1:]  # [rows, keep - 1]
    nll = token_nll(logits, targets)  # [rows, keep - 1]
    sel = target_mask[:, width - keep + 1:]
    return float(nll[sel].double().sum()), int(sel.sum())


def summarise(gens: Sequence[Generated], base_by_split: dict[str, Generated]) -> dict[str, Any]:
    """JSON-ready rates, intervals, per-category rates, flags and McNemar p-values vs base."""
    out: dict[str, Any] = {}
    for g in gens:
        entry = {
            "rate": g.rate.rate, "k": g.rate.k, "n": g.rate.n, "wilson95": [g.rate.low, g.rate.high],
            "per_category": {c: {"rate": r.rate, "k": r.k, "n": r.n, "wilson95": [r.low, r.high], "low_n": r.low_n}
                             for c, r in g.per_category().items()},
            "flags": g.flags(),
        }
        base = base_by_split.get(g.split)
        if base is not None and g is not base and [p.text for p in base.prompts] == [p.text for p in g.prompts]:
            entry["mcnemar_p_vs_base"] = mcnemar_exact(base.refused, g.refused)
        out.setdefault(g.condition, {})[g.split] = entry
    return out
