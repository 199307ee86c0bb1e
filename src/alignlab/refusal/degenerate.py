"""Degenerate-output flags for a set of generations (spec §3.4).

- ``empty``: only whitespace left after reasoning blocks are removed (special tokens are already skipped
  when decoding).
- ``repetitive``: >= 30 words with distinct word-trigram ratio < 0.3, or the last 25 % of the text is one
  unit repeated (period detection; the unit must contain a letter or digit and repeat >= 3 times).
- ``same_answer``: responses clustered by exact match or word-trigram Jaccard >= 0.8 on their normalised
  first 200 characters; members of the largest cluster are flagged when it covers > 10 % of the distinct
  prompts and > 3 prompts (heretic #290, #360). A refusal organism's refusals are *meant* to look alike,
  so read this flag per condition.
- ``deflection``: < 40 words and ends in "?" (the clarifying-question dodge, heretic #288); heuristic,
  reported separately and not counted as degenerate.
- ``stalled``: a reasoning block that never closes. ``truncated``: no EOS within the token budget;
  reported, not degenerate by itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields

from alignlab.errors import AlignlabError

# Reasoning-block markers of the families spec §2.2 names.
REASONING_BLOCKS: tuple[tuple[str, str], ...] = (
    ("<think>", "</think>"), ("<thought>", "</thought>"), ("[THINK]", "[/THINK]"),
)
_WORDS = re.compile(r"\w+(?:'\w+)?")


@dataclass(frozen=True)
class DegenerateConfig:
    repetitive_min_words: int = 30
    trigram_ratio: float = 0.3
    tail_fraction: float = 0.25
    tail_min_chars: int = 24
    same_answer_jaccard: float = 0.8
    same_answer_fraction: float = 0.1
    same_answer_min: int = 3
    deflection_max_words: int = 40

    def __post_init__(self) -> None:
        if not (0 < self.trigram_ratio <= 1 and 0 < self.tail_fraction <= 1 and 0 < self.same_answer_jaccard <= 1):
            raise AlignlabError("degenerate thresholds (ratios and fractions) must be in (0, 1]")


@dataclass(frozen=True)
class Flags:
    empty: bool = False
    repetitive: bool = False
    same_answer: bool = False
    deflection: bool = False
    stalled: bool = False
    truncated: bool = False

    @property
    def degenerate(self) -> bool:
        return self.empty or self.repetitive or self.same_answer or self.stalled


FLAG_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Flags))


def strip_reasoning(text: str) -> tuple[str, bool]:
    """Remove closed reasoning blocks; returns (answer, stalled) where stalled = a block never closed."""
    for start, end in REASONING_BLOCKS:
        while start in text:
            i = text.index(start)
            j = text.find(end, i + len(start))
            if j < 0:
                return text[:i], True
            text = text[:i] + text[j + len(end):]
        text = text.replace(end, "")  # templates may pre-open the block: a lone closing marker
    return text, False


def words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def trigrams(ws: Sequence[str]) -> list[tuple[str, str, str]]:
    return list(zip(ws, ws[1:], ws[2:]))


def _periodic_tail(text: str, cfg: DegenerateConfig) -> bool:
    tail = text.rstrip()[-max(1, int(len(text.rstrip()) * cfg.tail_fraction)):]
    if len(tail) < cfg.tail_min_chars:
        return False
    for period in range(1, len(tail) // 3 + 1):
        if tail[period:] == tail[:-period] and any(ch.isalnum() for ch in tail[:period]):
            return True
    return False


def is_repetitive(text: str, cfg: DegenerateConfig = DegenerateConfig()) -> bool:
    ws = words(text)
    if len(ws) >= cfg.repetitive_min_words:
        grams = trigrams(ws)
        if len(set(grams)) / len(grams) < cfg.trigram_ratio:
            return True
    return _periodic_tail(text, cfg)


def is_deflection(text: str, cfg: DegenerateConfig = DegenerateConfig()) -> bool:
    stripped = text.strip()
    return bool(stripped) and stripped.endswith("?") and len(words(stripped)) < cfg.deflection_max_words


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def same_answer_members(responses: Sequence[str], prompts: Sequence[str] | None = None,
                        cfg: DegenerateConfig = DegenerateConfig()) -> list[bool]:
    """Flag the members of the largest near-duplicate cluster when it is too large (see module doc)."""
    keys = [" ".join(r.lower().split())[:200] for r in responses]
    grams = [set(trigrams(words(k))) for k in keys]
    cluster = [-1] * len(keys)
    reps: list[int] = []  # representative index of each cluster
    for i, key in enumerate(keys):
        if not key:
            continue
        for c, j in enumerate(reps):
            if key == keys[j] or (grams[i] and grams[j] and _jaccard(grams[i], grams[j]) >= cfg.same_answer_jaccard):
                cluster[i] = c
                break
        else:
            cluster[i] = len(reps)
            reps.append(i)
    if not reps:
        return [False] * len(keys)
    prompt_ids = list(prompts) if prompts is not None else list(range(len(keys)))
    n_distinct = len(set(prompt_ids))
    covered = [len({prompt_ids[i] for i in range(len(keys)) if cluster[i] == c}) for c in range(len(reps))]
    best = max(range(len(reps)), key=lambda c: covered[c])
    if covered[best] > cfg.same_answer_fraction * n_distinct and covered[best] > cfg.same_answer_min:
        return [c == best for c in cluster]
    return [False] * len(keys)


def flag_outputs(responses: Sequence[str], finished: Sequence[bool] | None = None,
                 prompts: Sequence[str] | None = None, cfg: DegenerateConfig = DegenerateConfig()) -> list[Flags]:
    """Per-response flags for one generated set (``finished[i]``: generation stopped at EOS)."""
    if finished is not None and len(finished) != len(responses):
        raise AlignlabError(f"got {len(responses)} responses but {len(finished)} finished flags")
    if prompts is not None and len(prompts) != len(responses):
        raise AlignlabError(f"got {len(responses)} responses but {len(prompts)} prompts")
    answers = [strip_reasoning(r) for r in responses]
    same = same_answer_members([a for a, _ in answers], prompts, cfg)
    out = []
    for i, (answer, stalled) in enumerate(answers):
        empty = not answer.strip()
        out.append(Flags(
            empty=empty,
            repetitive=not empty and is_repetitive(answer, cfg),
            same_answer=same[i],
            deflection=not empty and is_deflection(answer, cfg),
            stalled=stalled,
            truncated=finished is not None and not finished[i],
        ))
    return out


def flag_rates(flags: Sequence[Flags]) -> dict[str, float]:
    """Fraction of responses with each flag, plus ``degenerate`` (empty | repetitive | same_answer | stalled)."""
    n = max(1, len(flags))
    rates = {name: sum(getattr(f, name) for f in flags) / n for name in FLAG_NAMES}
    rates["degenerate"] = sum(f.degenerate for f in flags) / n
    return rates
