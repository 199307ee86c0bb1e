"""A tied head kept as a rank-k correction instead of a clone (issue 19 §3): same logits, no copy, exported untied."""

import json

import pytest
import torch

from alignlab.models.safetensors_write import add_shard, write_blocks
from alignlab.models.tiny import tiny_model
from alignlab.refusal.edit import orthogonalize, orthogonalize_subspace
from alignlab.refusal.export import export_model, read_back
from alignlab.refusal.head import correction, materialize
from alignlab.refusal.intervene import ablate

TIED = ["llama", "qwen2", "gemma"]


def _inputs():
    ids = torch.randint(5, 290, (3, 7), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _direction(seed=1, dtype=torch.float32):
    return torch.randn(64, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("family", TIED)
def test_corrected_head_equals_hooks_and_copies_nothing(family):
    model, _ = tiny_model(family)
    embed = model.get_input_embeddings().weight
    original, ptr = embed.detach().clone(), embed.data_ptr()
    r = _direction()
    with torch.no_grad(), ablate(model, r):
        hooked = model(**_inputs()).logits
    report = orthogonalize(model, r, head_mode="correct")
    assert report.untied and report.exact
    # the head still shares the (edited) embedding's storage: nothing vocab x d was allocated
    assert model.get_output_embeddings().weight.data_ptr() == ptr == embed.data_ptr()
    assert not torch.equal(embed, original)  # the embedding itself is edited
    with torch.no_grad():
        baked = model(**_inputs()).logits
    torch.testing.assert_close(baked, hooked, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(materialize(model), original, atol=1e-6, rtol=0)


def test_without_correction_the_shared_head_would_be_wrong():
    """The negative control: removing the hook leaves the edited embedding as the head, and logits move."""
    model, _ = tiny_model("llama")
    r = _direction()
    with torch.no_grad(), ablate(model, r):
        hooked = model(**_inputs()).logits
    orthogonalize(model, r, head_mode="correct")
    correction(model).remove()
    with torch.no_grad():
        assert (model(**_inputs()).logits - hooked).abs().max() > 1e-3


def test_subspace_and_float64_corrections_stack_rank_k():
    model, _ = tiny_model("llama", dtype=torch.float64)
    original = model.get_input_embeddings().weight.detach().clone()
    dirs = torch.randn(3, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    orthogonalize_subspace(model, dirs, head_mode="correct")
    R, C = correction(model).factors()
    assert R.shape == (3, 64) and C.shape == (original.shape[0], 3)
    assert (materialize(model) - original).abs().max() < 1e-12


def test_half_precision_falls_back_to_a_clone():
    model, _ = tiny_model("llama", dtype=torch.bfloat16)
    orthogonalize(model, _direction(dtype=torch.bfloat16), head_mode="correct")
    assert correction(model) is None
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()


def test_export_writes_the_head_untied_and_loads_with_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = tiny_model("llama")
    original = model.get_input_embeddings().weight.detach().clone()
    orthogonalize(model, _direction(), head_mode="correct")
    assert export_model(model, tok, tmp_path / "out", {"test": True}) == 0.0
    files = sorted(p.name for p in (tmp_path / "out").glob("*.safetensors"))
    assert files == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert index["weight_map"]["lm_head.weight"] == "model-00002-of-00002.safetensors"
    assert json.loads((tmp_path / "out" / "config.json").read_text())["tie_word_embeddings"] is False
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert loaded.lm_head.weight.data_ptr() != loaded.model.embed_tokens.weight.data_ptr()
    assert torch.equal(loaded.model.embed_tokens.weight, model.get_input_embeddings().weight)
    torch.testing.assert_close(loaded.lm_head.weight, original, atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**_inputs()).logits, model(**_inputs()).logits, atol=1e-5, rtol=1e-5)


def test_read_back_notices_a_wrong_head(tmp_path):
    model, tok = tiny_model("llama")
    orthogonalize(model, _direction(), head_mode="correct")
    export_model(model, tok, tmp_path / "out", {})
    corr = correction(model)
    bump = torch.zeros_like(corr.cs[0])
    bump[3] = 1.0
    corr.add(corr.rs[0], bump)  # the in-memory head's row 3 now differs from the stored one by r
    assert read_back(model, tmp_path / "out") == pytest.approx(float(correction(model).rs[0].abs().max()), rel=1e-5)


def test_add_shard_to_a_sharded_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    from alignlab.models.safetensors_write import untie_config

    model, _ = tiny_model("llama")  # tied: the save stores no head; give it one in a shard of its own
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    n_before = len(list(tmp_path.glob("*.safetensors")))
    assert n_before > 1
    head = torch.randn(model.lm_head.weight.shape, generator=torch.Generator().manual_seed(3))
    with pytest.raises(Exception, match="already stores"):
        add_shard(tmp_path, "model.norm.weight", head.dtype, tuple(head.shape), [head])
    add_shard(tmp_path, "lm_head.weight", head.dtype, tuple(head.shape), [head[:100], head[100:]])
    untie_config(tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == n_before + 1
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(loaded.lm_head.weight, head)
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_write_blocks_refuses_short_data(tmp_path):
    with pytest.raises(Exception, match="expected"):
        write_blocks(tmp_path / "x.safetensors", "x", torch.float32, (4, 2), [torch.zeros(3, 2)])


def test_gguf_export_writes_the_corrected_head(tmp_path):
    from alignlab.refusal.gguf_export import export_gguf, gguf_tensors
    from alignlab.refusal.gguf_export import read_back as gguf_read_back

    model, tok = tiny_model("llama", attention_bias=False, mlp_bias=False)
    original = model.get_input_embeddings().weight.detach().clone()
    orthogonalize(model, _direction(), head_mode="correct")
    tensors = gguf_tensors(model)
    torch.testing.assert_close(torch.from_numpy(tensors["output.weight"]), original, atol=1e-6, rtol=0)
    assert torch.equal(torch.from_numpy(tensors["token_embd.weight"]), model.get_input_embeddings().weight)
    assert gguf_read_back(export_gguf(model, tok, tmp_path / "m.gguf", f16=False), model) == 0.0
