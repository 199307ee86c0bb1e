"""Held-out evaluation of a refusal organism: greedy generations on harmful and harmless prompts of one
split, judged by the substring judge (spec §3.2), with Wilson intervals (§3.5) and degenerate flags (§3.4).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from alignlab.refusal.degenerate import flag_outputs, flag_rates
from alignlab.refusal.judge import SubstringJudge
from alignlab.refusal.stats import Rate, rate


@dataclass(frozen=True)
class SideResult:
    refusal: Rate
    flags: dict[str, float]
    prompts: list[str]
    responses: list[str]
    refused: list[bool]

    def to_json(self) -> dict[str, Any]:
        return {"n": self.refusal.n, "refusals": self.refusal.k, "rate": round(self.refusal.rate, 4),
                "wilson95": [round(self.refusal.low, 4), round(self.refusal.high, 4)],
                "flags": {k: round(v, 4) for k, v in self.flags.items()},
                "samples": [{"prompt": p, "response": r, "refusal": f}
                            for p, r, f in zip(self.prompts, self.responses, self.refused)]}


@dataclass(frozen=True)
class EvalResult:
    split: str
    max_new_tokens: int
    harmful: SideResult
    harmless: SideResult
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"split": self.split, "max_new_tokens": self.max_new_tokens, "judge": "substring:rd",
                "seconds": round(self.seconds, 1), "harmful": self.harmful.to_json(),
                "harmless": self.harmless.to_json()}


def eval_prompts(split: str, n_harmful: int | None, n_harmless: int | None,
                 seed: int = 42) -> tuple[list[str], list[str]]:
    """Harmful (stratified) and harmless prompt samples of ``split`` (spec §2.1)."""
    from alignlab.data import load_harmful, load_harmless, sample, split_prompts

    harmful_pool, harmless_pool = load_harmful(), load_harmless()
    harmful = split_prompts(harmful_pool, exclude=harmless_pool).get(split)
    harmless = split_prompts(harmless_pool, exclude=harmful_pool).get(split)
    return ([p.text for p in sample(harmful, n_harmful, seed, stratify=True)],
            [p.text for p in sample(harmless, n_harmless, seed)])


def _side(model: Any, fmt: Any, prompts: list[str], max_new_tokens: int, batch_size: int,
          progress: bool) -> SideResult:
    from alignlab.organisms.replies import generate_greedy

    replies = generate_greedy(model, fmt, prompts, max_new_tokens, batch_size, progress)
    texts = [r.text for r in replies]
    verdicts = SubstringJudge("rd").judge(prompts, texts)
    refused = [v.label == "refusal" for v in verdicts]
    flags = flag_rates(flag_outputs(texts, [r.finished for r in replies], prompts))
    return SideResult(rate(sum(refused), len(refused)), flags, prompts, texts, refused)


def evaluate(model: Any, tokenizer: Any, *, split: str = "test", n_harmful: int | None = None,
             n_harmless: int | None = None, max_new_tokens: int = 64, seed: int = 42, batch_size: int = 32,
             progress: bool = True) -> EvalResult:
    """Refusal rates of ``model`` on held-out prompts (no system prompt, greedy decoding)."""
    from alignlab.models.chat import chat_format

    fmt = chat_format(tokenizer)
    harmful, harmless = eval_prompts(split, n_harmful, n_harmless, seed)
    start = time.perf_counter()
    hf = _side(model, fmt, harmful, max_new_tokens, batch_size, progress)
    hl = _side(model, fmt, harmless, max_new_tokens, batch_size, progress)
    return EvalResult(split, max_new_tokens, hf, hl, time.perf_counter() - start)
