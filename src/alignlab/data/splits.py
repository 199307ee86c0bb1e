"""Hash splits and deterministic sampling (spec §2.1 "Splits").

A prompt's split depends only on its normalised text: u = SHA-256(normalise(text)) read as a fraction in
[0, 1); train u < train, val u < train + val, else test. So splits are independent of file order and
stable as pools grow (adding prompts never moves an existing one), and proportional per category in
expectation. Sampling ranks prompts by SHA-256(seed, text), so it too is order independent.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from alignlab.data.prompts import Prompt, normalise

MIN_PER_CATEGORY = 10  # §2.1: stratified test sample keeps >= 10 per category where possible


@dataclass(frozen=True)
class Splits:
    """Disjoint train/val/test lists (each sorted by text hash, i.e. a fixed pseudo-random order)."""

    train: list[Prompt]
    val: list[Prompt]
    test: list[Prompt]

    def get(self, name: str) -> list[Prompt]:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; use train, val or test")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def hash_fraction(text: str) -> float:
    """u in [0, 1) from the first 64 bits of SHA-256 of the normalised text."""
    return int(_digest(normalise(text))[:16], 16) / 2.0**64


def dedup(prompts: Iterable[Prompt], exclude: Iterable[str | Prompt] = ()) -> list[Prompt]:
    """Drop later copies (by normalised text) and anything whose normalised text is in ``exclude``."""
    seen = {normalise(e.text if isinstance(e, Prompt) else e) for e in exclude}
    out: list[Prompt] = []
    for p in prompts:
        key = normalise(p.text)
        if key and key not in seen:
            seen.add(key)
            out.append(p)
    return out


def split_prompts(prompts: Iterable[Prompt], *, train: float = 0.5, val: float = 0.2,
                  exclude: Iterable[str | Prompt] = ()) -> Splits:
    """De-duplicate, drop ``exclude``d texts, split by hash: train u<train, val u<train+val, else test."""
    if not (0.0 <= train <= 1.0 and 0.0 <= val <= 1.0 and train + val <= 1.0):
        raise ValueError(f"split fractions must be in [0, 1] with train + val <= 1 (got {train}, {val})")
    parts: dict[str, list[tuple[str, Prompt]]] = {"train": [], "val": [], "test": []}
    for p in dedup(prompts, exclude):
        key = _digest(normalise(p.text))
        u = int(key[:16], 16) / 2.0**64
        name = "train" if u < train else "val" if u < train + val else "test"
        parts[name].append((key, p))
    return Splits(**{k: [p for _k, p in sorted(v, key=lambda kv: kv[0])] for k, v in parts.items()})


def _rank_key(seed: int, p: Prompt) -> str:
    return _digest(f"{seed}\x00{normalise(p.text)}\x00{p.category}")


def sample(prompts: Sequence[Prompt], n: int | None, seed: int, stratify: bool = False) -> list[Prompt]:
    """A deterministic sample of ``n`` prompts (all of them when n is None or >= len).

    Prompts are ranked by SHA-256(seed, text); the first ``n`` are taken. With ``stratify`` each category
    first gets min(10, available) slots (round-robin when n cannot cover that), the rest go to the best
    ranked leftovers, which keeps categories proportional in expectation. Output is in rank order.
    """
    if n is not None and n < 0:
        raise ValueError(f"sample size must be >= 0 or None (got {n})")
    items = list(prompts)
    ranked = sorted(range(len(items)), key=lambda i: _rank_key(seed, items[i]))  # indices in rank order
    if n is None or n >= len(ranked):
        return [items[i] for i in ranked]
    if not stratify:
        return [items[i] for i in ranked[:n]]
    by_cat: dict[str, list[int]] = defaultdict(list)
    for i in ranked:
        by_cat[items[i].category].append(i)
    chosen: list[int] = []
    # Round-robin up to the per-category floor, categories in a seed-dependent but fixed order.
    cats = sorted(by_cat, key=lambda c: _digest(f"{seed}\x00cat\x00{c}"))
    for depth in range(MIN_PER_CATEGORY):
        for c in cats:
            if len(chosen) < n and depth < len(by_cat[c]):
                chosen.append(by_cat[c][depth])
    taken = set(chosen)
    chosen.extend(i for i in ranked if i not in taken)
    keep = set(chosen[:n])
    return [items[i] for i in ranked if i in keep]
