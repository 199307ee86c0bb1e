"""Measure one study condition on the held-out prompts: judged >= 128-token generations on harmful test
(refusal and degenerate flags per prompt), first-token KL per harmless test prompt and CE on the base model's
own harmless completions. Everything is returned per prompt, so any two conditions can be paired."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from alignlab.data import Prompt
from alignlab.models.chat import ChatFormat
from alignlab.refusal.degenerate import flag_outputs
from alignlab.refusal.evaluate import completion_ce, generate
from alignlab.refusal.forward import logprobs_for
from alignlab.refusal.judge import Judge
from alignlab.refusal.score import first_token_kl
from alignlab.refusal.stats import rate_of
from alignlab.refusal.study_conditions import Condition, ContextFactory
from alignlab.refusal.study_config import StudyConfig


@dataclass(frozen=True)
class Reference:
    """What every condition is compared with on the harmless side."""

    harmless: list[str]
    """Harmless test prompts."""
    base_logprobs: torch.Tensor
    """Base model's first-token log-probs on them: [n, vocab] float64."""
    completions: list[str]
    """Base model's greedy completions of them (CE is measured on these)."""


def degenerate_flags(
    responses: Sequence[str], finished: Sequence[bool], prompts: Sequence[str], refused: Sequence[bool]
) -> list[bool]:
    """Spec §3.4 degenerate flags, except that refusals looking alike is not degeneration (a refusing model's
    refusals are meant to be the same answer; see ``degenerate.py``)."""
    flags = flag_outputs(list(responses), list(finished), list(prompts))
    return [f.empty or f.repetitive or f.stalled or (f.same_answer and not r) for f, r in zip(flags, refused)]


def rate_json(flags: Sequence[bool]) -> dict[str, Any]:
    r = rate_of(flags)
    return {"k": r.k, "n": r.n, "rate": r.rate, "wilson95": [r.low, r.high]}


def measure(
    cond: Condition,
    model: torch.nn.Module,
    context: ContextFactory,
    fmt: ChatFormat,
    harmful: Sequence[Prompt],
    ref: Reference,
    judge: Judge,
    cfg: StudyConfig,
) -> dict[str, Any]:
    """Every per-prompt outcome of ``cond`` (JSON-ready)."""
    start = time.perf_counter()
    gen = generate(
        model,
        fmt,
        harmful,
        condition=cond.name,
        split="harmful",
        judge=judge,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.gen_batch_size,
        context=context,
    )
    texts = [p.text for p in harmful]
    degenerate = degenerate_flags(gen.responses, gen.finished, texts, gen.refused)
    lp = logprobs_for(model, fmt, ref.harmless, cfg.gen_batch_size, context() if context else None)
    kl = first_token_kl(ref.base_logprobs, lp)  # [n]
    ce = completion_ce(model, fmt, ref.harmless, ref.completions, cfg.gen_batch_size, context)
    return {
        **cond.spec(),
        "label": cond.label,
        "refusal": rate_json(gen.refused),
        "degenerate": rate_json(degenerate),
        "kl": float(kl.mean()),
        "ce": ce,
        "per_prompt": {
            "refused": gen.refused,
            "degenerate": degenerate,
            "kl": [float(x) for x in kl],
            "finished": gen.finished,
        },
        "responses": gen.responses,
        "seconds": round(time.perf_counter() - start, 3),
    }
