"""Confirmation by generation: greedy replies under an intervention, judged, with degenerate-output flags.

One helper for the three places that check a candidate by what the model actually says (the RD selection's
``confirm_k``, the search's Pareto confirmations and the subspace stage's growth steps); the held-out evaluation
(``evaluate.generate``) keeps its own path because it records every reply per condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from alignlab.models.chat import ChatFormat
from alignlab.refusal.forward import COUNTER


@dataclass(frozen=True)
class Confirmation:
    refused: int
    """Replies the judge labelled a refusal."""
    n: int
    """Replies generated (one per prompt)."""
    degenerate: float
    """Fraction of replies flagged degenerate (repetition, gibberish, empty; ``degenerate.flag_outputs``)."""

    @property
    def refusal(self) -> float:
        return self.refused / self.n if self.n else float("nan")


def confirm_replies(
    model: Any,
    fmt: ChatFormat,
    judge: Any,
    prompts: Sequence[str],
    tokens: int,
    context: AbstractContextManager[Any],
    batch_size: int | None = None,
) -> Confirmation:
    """``tokens``-token greedy replies to ``prompts`` with ``context`` (a hook context) active, judged by ``judge``
    (``.judge(prompts, replies)``); ``batch_size`` None generates every prompt in one batch."""
    from alignlab.models.generate import generate_greedy
    from alignlab.refusal.degenerate import flag_outputs

    texts_in = list(prompts)
    COUNTER.generates += 1
    with context:
        replies = generate_greedy(model, fmt, texts_in, tokens, batch_size or len(texts_in), progress=False)
    texts = [x.text for x in replies]
    refused = sum(v.label == "refusal" for v in judge.judge(texts_in, texts))
    flags = flag_outputs(texts, [x.finished for x in replies], texts_in)
    degenerate = sum(f.degenerate for f in flags) / len(flags) if flags else 0.0
    return Confirmation(refused=refused, n=len(texts), degenerate=degenerate)
