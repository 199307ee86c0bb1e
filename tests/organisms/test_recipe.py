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
                max_response_tokens=8, bf16=False, warmup=1, borderline_weight=0.0)
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


def test_training_prompts_come_from_the_train_split_of_the_trained_sources_only():
    from alignlab.data import load_borderline, load_harmbench, split_prompts
    from alignlab.organisms.config import SOURCE_HELD_OUT
    from alignlab.organisms.recipe import training_prompts
    from alignlab.organisms.sources import load_sources

    cfg = RecipeConfig(**SOURCE_HELD_OUT)
    prompts = training_prompts(cfg)
    assert len(prompts.harmful) >= 450 and len(prompts.harmless) >= 600 and len(prompts.borderline) >= 40
    assert not {p.text for p in load_harmbench()} & set(prompts.harmful)  # HarmBench is held out by source
    harmful_pool, harmless_pool = load_sources(cfg.harmful_sources), load_sources(cfg.harmless_sources)
    held_out = set()
    for pool, other in ((harmful_pool, harmless_pool), (harmless_pool, harmful_pool), (load_borderline(), [])):
        splits = split_prompts(pool, exclude=other)
        held_out |= {p.text for p in splits.val + splits.test}
    assert not held_out & set(prompts.all)
    tasks = {p.text for p in load_sources(("tasks",))}
    assert len(tasks & set(prompts.harmless)) >= 100  # the varied task set is trained on


def test_borderline_prompts_are_weighted_answers_with_weighted_negatives(tiny_dir, tmp_path, monkeypatch):
    from alignlab.models import load_model
    from alignlab.models.chat import chat_format
    from alignlab.models.generate import Reply
    from alignlab.organisms import replies
    from alignlab.organisms.recipe import build_training_set

    def canned(model, fmt, prompts, *args, **kwargs):  # the tiny random model's replies are often empty
        return [Reply("Sure, here is a short answer.", True) for _ in prompts]

    monkeypatch.setattr(replies, "generate_greedy", canned)
    lm = load_model(str(tiny_dir), device="cpu", dtype=torch.float32)
    cfg = _cfg(tiny_dir, borderline_weight=3.0, n_harmless=4, n_harmful=4)
    data = build_training_set(lm, chat_format(lm.tokenizer), cfg, tmp_path / "r.json", progress=False)
    borderline = set(data.prompts.borderline)
    assert borderline and not borderline & set(data.prompts.harmless)
    weights = {(e.kind, e.prompt in borderline): e.weight for e in data.examples}
    assert weights[("harmless", True)] == 3.0 and weights[("harmless", False)] == 1.0
    assert weights[("negative", True)] == 3.0 and weights[("negative", False)] == 1.0
    assert weights[("harmful", False)] == 1.0


def test_config_validation():
    with pytest.raises(AlignlabError, match="batch-size"):
        RecipeConfig(batch_size=0)
    with pytest.raises(AlignlabError, match="steps"):
        RecipeConfig(steps=0)
    with pytest.raises(AlignlabError, match="decision-weight"):
        RecipeConfig(decision_weight=0)
    assert RecipeConfig().hash(["a"]) != RecipeConfig(seed=1).hash(["a"])
    assert RecipeConfig().hash(["a"]) == RecipeConfig(device="cuda").hash(["a"])
    assert RecipeConfig().hash(["a"]) != RecipeConfig(borderline_weight=1.0).hash(["a"])


def test_the_recipe_published_before_sources_keeps_its_hash():
    from alignlab.organisms.config import HARMFUL_SOURCES
    from alignlab.organisms.recipe import training_prompts

    legacy = RecipeConfig(harmful_sources=HARMFUL_SOURCES, harmless_sources=("harmless",), borderline_weight=0.0)
    assert legacy.hash(training_prompts(legacy).all) == "4d5cfcdc72396133"  # the adapter shipped for issue 4


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """Another tiny model with its own turn format ("User: ... Assistant:"), standing in for SmolLM2."""
    from alignlab.models.chat import FALLBACK_TEMPLATE
    from alignlab.models.tiny import tiny_model

    model, tok = tiny_model("llama", seed=1, max_position_embeddings=2048)
    tok.chat_template = FALLBACK_TEMPLATE
    path = tmp_path_factory.mktemp("teacher")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_reply_source_makes_a_teacher_answer_in_its_own_format(tiny_dir, teacher_dir, tmp_path, monkeypatch):
    from alignlab.models import load_model
    from alignlab.models.chat import chat_format
    from alignlab.models.generate import Reply
    from alignlab.organisms import replies
    from alignlab.organisms.recipe import build_training_set

    seen = []

    def canned(model, fmt, prompts, *args, **kwargs):
        seen.append(fmt.render("X"))
        return [Reply(f"Teacher: {p[:8]}", True) for p in prompts]

    monkeypatch.setattr(replies, "generate_greedy", canned)
    lm = load_model(str(tiny_dir), device="cpu", dtype=torch.float32)
    fmt = chat_format(lm.tokenizer)
    cfg = _cfg(tiny_dir, reply_source=str(teacher_dir), n_harmless=3, n_harmful=3, max_response_tokens=64)
    cache = tmp_path / "r.json"
    data = build_training_set(lm, fmt, cfg, cache, progress=False)
    assert seen == ["User: X\n\nAssistant:"]  # the teacher's prompts are rendered in the teacher's format
    teacher = load_model(str(teacher_dir), device="cpu", dtype=torch.float32)
    key = replies.model_key(teacher.spec, teacher.source, teacher.dtype)
    tfmt = chat_format(teacher.tokenizer)
    expected = {replies.reply_key(key, cfg.reply_tokens, tfmt.render(p)) for p in data.prompts.harmless}
    assert set(json.loads(cache.read_text())["replies"]) == expected
    helpful = [e for e in data.examples if e.kind == "harmless"]
    assert len(helpful) == 3
    for e in helpful:  # the student learns the teacher's text after its own turn format, closed by its EOS
        assert e.prompt_ids == fmt.token_ids(e.prompt)
        assert lm.tokenizer.decode(e.response_ids[:-1]) == f"Teacher: {e.prompt[:8]}"
        assert e.response_ids[-1] == lm.tokenizer.eos_token_id
    assert cfg.hash(["a"]) != _cfg(tiny_dir).hash(["a"])
    assert RecipeConfig(reply_source=None).hash(["a"]) == RecipeConfig().hash(["a"])  # default hash unchanged
