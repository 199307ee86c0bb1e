from __future__ import annotations

import json

import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.organisms.config import RecipeConfig
from alignlab.organisms.lora import read_adapter


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from alignlab.models.tiny import tiny_model

    model, tok = tiny_model("llama", seed=0, max_position_embeddings=2048)
    path = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _cfg(tiny_dir, **kw):
    base = dict(base=str(tiny_dir), n_harmful=6, n_harmless=6, steps=3, batch_size=4, reply_tokens=6,
                max_response_tokens=8, bf16=False, warmup=1)
    return RecipeConfig(**(base | kw))


def test_recipe_end_to_end_is_deterministic_and_caches_replies(tiny_dir, tmp_path, monkeypatch):
    from alignlab.organisms import recipe, replies

    cache = tmp_path / "replies.json"
    res = recipe.run_recipe(_cfg(tiny_dir), tmp_path / "a", progress=False, cache_path=cache)
    assert (res.n_harmful, res.n_harmless, res.train.steps) == (6, 6, 3)
    cfg, tensors = read_adapter(tmp_path / "a")
    assert cfg.base == str(tiny_dir) and cfg.r == 8 and len(cfg.recipe_hash) == 16
    assert len(tensors) == 2 * 7 * 3
    record = json.loads((tmp_path / "a" / "training.json").read_text())
    assert record["data"]["harmless_train"] == 6 and record["train"]["steps"] == 3
    assert len(json.loads(cache.read_text())["replies"]) == 6

    def no_generation(*args, **kwargs):
        raise AssertionError("replies should come from the cache")

    monkeypatch.setattr(replies, "generate_greedy", no_generation)
    again = recipe.run_recipe(_cfg(tiny_dir), tmp_path / "b", progress=False, cache_path=cache)
    assert again.train.losses == res.train.losses
    _, tensors_b = read_adapter(tmp_path / "b")
    assert all(torch.equal(tensors[k], tensors_b[k]) for k in tensors)
    monkeypatch.undo()
    other = recipe.run_recipe(_cfg(tiny_dir, seed=1), tmp_path / "c", progress=False, cache_path=cache)
    assert other.adapter.recipe_hash != res.adapter.recipe_hash


def test_training_prompts_come_from_the_train_split_only():
    from alignlab.data import load_harmful, load_harmless, split_prompts
    from alignlab.organisms.recipe import training_prompts

    harmful, harmless = training_prompts(RecipeConfig())
    assert len(harmful) == len(harmless) >= 300  # balanced mix, all harmless TRAIN prompts
    held_out = set()
    for pool, other in ((load_harmful(), load_harmless()), (load_harmless(), load_harmful())):
        splits = split_prompts(pool, exclude=other)
        held_out |= {p.text for p in splits.val + splits.test}
    assert not held_out & set(harmful + harmless)


def test_config_validation():
    with pytest.raises(AlignlabError, match="batch-size"):
        RecipeConfig(batch_size=0)
    with pytest.raises(AlignlabError, match="steps"):
        RecipeConfig(steps=0)
    with pytest.raises(AlignlabError, match="decision-weight"):
        RecipeConfig(decision_weight=0)
    assert RecipeConfig().hash(["a"]) != RecipeConfig(seed=1).hash(["a"])
    assert RecipeConfig().hash(["a"]) == RecipeConfig(device="cuda").hash(["a"])
