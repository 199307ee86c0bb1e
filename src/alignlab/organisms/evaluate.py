"""Held-out evaluation of a refusal organism: greedy generations, two judges, in distribution and out of source.

In distribution = the held-out split of the sources the organism trained on; out of source = sources it never
saw (organisms/sources.py). Every side is judged by the substring judge ``rd`` (spec §3.2, comparable with
published numbers) and by the opening judge (refusal in the reply's first sentence; "acceptance then refusal"
replies counted separately), with Wilson intervals (§3.5) and degenerate flags (§3.4).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from alignlab.data import Prompt
from alignlab.refusal.degenerate import flag_outputs, flag_rates
from alignlab.refusal.judge import OpeningJudge, SubstringJudge
from alignlab.refusal.stats import Rate, rate


def _rate_json(r: Rate) -> dict[str, Any]:
    return {"k": r.k, "n": r.n, "rate": round(r.rate, 4), "wilson95": [round(r.low, 4), round(r.high, 4)]}


@dataclass(frozen=True)
class SideResult:
    """One prompt set judged twice: ``refusal`` (rd), ``opening`` and ``late`` (opening judge's acceptance-then-
    refusal replies, not included in ``opening``)."""

    refusal: Rate
    opening: Rate
    late: Rate
    flags: dict[str, float]
    prompts: list[Prompt]
    responses: list[str]
    labels: dict[str, list[str]]
    """Per judge name, the label of each response."""

    def by_source(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for source in dict.fromkeys(p.source for p in self.prompts):
            rows = [i for i, p in enumerate(self.prompts) if p.source == source]
            out[source] = {judge: _rate_json(rate(sum(labels[i] == "refusal" for i in rows), len(rows)))
                           for judge, labels in self.labels.items()}
        return out

    def to_json(self, samples: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.refusal.n, "substring:rd": _rate_json(self.refusal), "opening": _rate_json(self.opening),
            "opening_late_refusal": _rate_json(self.late), "by_source": self.by_source(),
            "flags": {k: round(v, 4) for k, v in self.flags.items()}}
        if samples:
            out["samples"] = [{"prompt": p.text, "source": p.source, "response": r,
                               **{judge: labels[i] for judge, labels in self.labels.items()}}
                              for i, (p, r) in enumerate(zip(self.prompts, self.responses))]
        return out


@dataclass(frozen=True)
class EvalResult:
    split: str
    max_new_tokens: int
    in_harmful: SideResult
    in_harmless: SideResult
    out_harmful: SideResult | None
    out_harmless: SideResult | None
    trained: dict[str, list[str]]
    seconds: float

    def to_json(self, samples: bool = True) -> dict[str, Any]:
        def side(s: SideResult | None) -> dict[str, Any] | None:
            return None if s is None else s.to_json(samples)

        return {"split": self.split, "max_new_tokens": self.max_new_tokens,
                "judges": ["substring:rd", "opening"], "trained_sources": self.trained,
                "seconds": round(self.seconds, 1),
                "in_distribution": {"harmful": side(self.in_harmful), "harmless": side(self.in_harmless)},
                "out_of_source": {"harmful": side(self.out_harmful), "harmless": side(self.out_harmless)}}


def judge_side(prompts: list[Prompt], texts: list[str], finished: list[bool]) -> SideResult:
    """Both judges' rates and the degenerate flags of one set of replies."""
    bare = [p.text for p in prompts]
    rd = [v.label for v in SubstringJudge("rd").judge(bare, texts)]
    opening = [v.label for v in OpeningJudge().judge(bare, texts)]
    flags = flag_rates(flag_outputs(texts, finished, bare))
    n = len(texts)
    return SideResult(rate(rd.count("refusal"), n), rate(opening.count("refusal"), n),
                      rate(opening.count("late_refusal"), n), flags, prompts, texts,
                      {"substring:rd": rd, "opening": opening})


def _side(model: Any, fmt: Any, prompts: list[Prompt], max_new_tokens: int, batch_size: int,
          progress: bool) -> SideResult | None:
    from alignlab.organisms.replies import generate_greedy

    if not prompts:
        return None
    replies = generate_greedy(model, fmt, [p.text for p in prompts], max_new_tokens, batch_size, progress)
    return judge_side(prompts, [r.text for r in replies], [r.finished for r in replies])


def evaluate(model: Any, tokenizer: Any, sources: Any, *, split: str = "test", n_harmful: int | None = None,
             n_harmless: int | None = None, n_out_of_source: int | None = 200, max_new_tokens: int = 64,
             seed: int = 42, batch_size: int = 32, progress: bool = True) -> EvalResult:
    """Refusal rates of ``model`` (no system prompt, greedy decoding) on the held-out split of the
    ``sources`` (a ``TrainedSources``) it trained on and on every source it did not."""
    from alignlab.models.chat import chat_format
    from alignlab.organisms.sources import eval_sets

    fmt = chat_format(tokenizer)
    sets = eval_sets(sources, split, n_harmful, n_harmless, n_out_of_source, seed)
    start = time.perf_counter()
    sides = [_side(model, fmt, prompts, max_new_tokens, batch_size, progress)
             for prompts in (sets.in_harmful, sets.in_harmless, sets.out_harmful, sets.out_harmless)]
    in_harmful, in_harmless = sides[0], sides[1]
    if in_harmful is None or in_harmless is None:
        from alignlab.errors import AlignlabError

        raise AlignlabError(f"no {split} prompts for the trained sources; check --n-harmful / --n-harmless")
    trained = {"harmful": list(sources.harmful), "harmless": list(sources.harmless)}
    return EvalResult(split, max_new_tokens, in_harmful, in_harmless, sides[2], sides[3], trained,
                      time.perf_counter() - start)
