"""Which prompt sources a recipe trains on, and the held-out-by-source evaluation sets that follow.

A recipe trains on the TRAIN split of its ``harmful_sources`` and ``harmless_sources`` (spec §2.1 hash
splits). Evaluation then has two halves: *in distribution* (the held-out split of those same sources) and
*out of source* (every prompt of the sources it never saw, capped per source), so an organism that learnt
one set's style rather than "harmless" shows up as a gap between the two.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from alignlab.data import Prompt, sample, split_prompts
from alignlab.models.embedded import EMBEDDED, PACKAGE_ROOT
from alignlab.organisms.config import HARMFUL_EVAL_ONLY, HARMFUL_SOURCES, HARMLESS_SOURCES, RecipeConfig

# Embedded models that are a base plus an adapter shipped in this package (smollm2-135m-refusal, gemma3-270m-refusal).
SHIPPED_ADAPTERS = {e.name: PACKAGE_ROOT / e.adapter for e in EMBEDDED.values() if e.adapter is not None}
# training.json records written before sources were configurable: the recipe trained on these.
LEGACY_SOURCES = (HARMFUL_SOURCES, ("harmless",))


@dataclass(frozen=True)
class TrainedSources:
    harmful: tuple[str, ...]
    harmless: tuple[str, ...]

    @property
    def held_out_harmful(self) -> tuple[str, ...]:
        return tuple(s for s in (*HARMFUL_SOURCES, *HARMFUL_EVAL_ONLY) if s not in self.harmful)

    @property
    def held_out_harmless(self) -> tuple[str, ...]:
        return tuple(s for s in HARMLESS_SOURCES if s not in self.harmless)


def load_sources(names: tuple[str, ...]) -> list[Prompt]:
    from alignlab.data.registry import load_named

    return [p for name in names for p in load_named(name)]


def trained_sources(model: str, adapter: Path | None) -> TrainedSources:
    """The sources behind ``adapter`` (or the shipped adapter of ``model``), read from its training.json;
    the ``RecipeConfig()`` defaults when there is no record (e.g. a base model)."""
    adapter = adapter if adapter is not None else SHIPPED_ADAPTERS.get(model)
    record = adapter / "training.json" if adapter is not None else None
    if record is None or not record.is_file():
        cfg = RecipeConfig()
        return TrainedSources(cfg.harmful_sources, cfg.harmless_sources)
    config = json.loads(record.read_text(encoding="utf-8"))["config"]
    return TrainedSources(tuple(config.get("harmful_sources", LEGACY_SOURCES[0])),
                          tuple(config.get("harmless_sources", LEGACY_SOURCES[1])))


@dataclass(frozen=True)
class EvalSets:
    """Prompts of one evaluation: held-out split of the trained sources, and the unseen sources."""

    in_harmful: list[Prompt]
    in_harmless: list[Prompt]
    out_harmful: list[Prompt]
    out_harmless: list[Prompt]


def _cap_per_source(prompts: list[Prompt], n: int | None, seed: int) -> list[Prompt]:
    out: list[Prompt] = []
    for source in dict.fromkeys(p.source for p in prompts):
        out += sample([p for p in prompts if p.source == source], n, seed, stratify=True)
    return out


def eval_sets(sources: TrainedSources, split: str = "test", n_harmful: int | None = None,
              n_harmless: int | None = None, n_out_of_source: int | None = 200, seed: int = 42) -> EvalSets:
    """In distribution: ``split`` of the trained sources (harmful stratified by category). Out of source:
    every prompt of each unseen source, at most ``n_out_of_source`` per source (stratified)."""
    harmful_pool, harmless_pool = load_sources(sources.harmful), load_sources(sources.harmless)
    in_harmful = split_prompts(harmful_pool, exclude=harmless_pool).get(split)
    in_harmless = split_prompts(harmless_pool, exclude=harmful_pool).get(split)
    out_harmful = _cap_per_source(load_sources(sources.held_out_harmful), n_out_of_source, seed)
    out_harmless = _cap_per_source(load_sources(sources.held_out_harmless), n_out_of_source, seed)
    return EvalSets(sample(in_harmful, n_harmful, seed, stratify=True), sample(in_harmless, n_harmless, seed),
                    out_harmful, out_harmless)
