import pytest
import torch
from torch import nn

from alignlab.errors import ArchitectureError
from alignlab.models.anatomy import map_model
from alignlab.models.tiny import FAMILIES, tiny_model

# family -> (writers per block, tied head, norm placement, position embedding)
EXPECTED = {
    "llama": (2, True, "pre", None),
    "mistral": (2, False, "pre", None),
    "qwen2": (2, True, "pre", None),
    "qwen3": (2, True, "pre", None),
    "gemma": (2, True, "pre", None),
    "gemma2": (2, True, "pre+post", None),
    "gemma3_text": (2, True, "pre+post", None),
    "phi3": (2, False, "pre", None),
    "olmo2": (2, False, "post", None),
    "granite": (2, True, "pre", None),
    "mixtral": (2, False, "pre", None),
    "qwen2_moe": (3, False, "pre", None),
    "gpt2": (2, True, "pre", "transformer.wpe"),
    "gpt_neox": (2, False, "pre", None),
}


def test_every_family_is_covered():
    assert set(EXPECTED) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_anatomy_maps_family(family):
    model, _ = tiny_model(family)
    anatomy = map_model(model)
    n_writers, tied, placement, pos = EXPECTED[family]
    assert anatomy.n_layers == 3
    assert anatomy.d_model == 64
    assert anatomy.tied_embeddings is tied
    assert anatomy.norm_placement == placement
    assert anatomy.position_embedding_name == pos
    assert all(len(b.writers) == n_writers for b in anatomy.block_maps)
    assert len(anatomy.blocks) == 3
    # every writer resolves to a real module/parameter whose output axis is d
    for writer in anatomy.writers():
        if writer.kind == "experts3d":
            param = model.get_parameter(writer.name)
            assert param.shape[writer.d_axis] == 64
        else:
            module = model.get_submodule(writer.name)
            weight = module.weight
            assert (weight.shape[1] if writer.kind == "conv1d" else weight.shape[0]) == 64
    assert anatomy.embedding is model.get_input_embeddings()
    assert anatomy.unembedding is model.get_output_embeddings()


def test_post_norm_roles_found_by_data_flow_not_name():
    llama, _ = tiny_model("llama")
    gemma2, _ = tiny_model("gemma2")
    llama_norms = {n.name.rsplit(".", 1)[-1]: n.placement for n in map_model(llama).block_maps[0].norms}
    gemma_norms = {n.name.rsplit(".", 1)[-1]: n.placement for n in map_model(gemma2).block_maps[0].norms}
    # same name, different role
    assert llama_norms["post_attention_layernorm"] == "pre_mlp"
    assert gemma_norms["post_attention_layernorm"] == "post_attn"
    assert gemma_norms["post_feedforward_layernorm"] == "post_mlp"


def test_unknown_part_in_block_fails_loudly():
    model, _ = tiny_model("llama")
    model.model.layers[1].mamba = nn.Linear(64, 64)
    with pytest.raises(ArchitectureError, match="mamba"):
        map_model(model, refresh=True)


def test_renamed_writer_fails_loudly():
    model, _ = tiny_model("llama")
    for layer in model.model.layers:
        layer.self_attn.out_projection = layer.self_attn.o_proj
        del layer.self_attn.o_proj
    with pytest.raises(ArchitectureError, match="out_projection"):
        map_model(model, refresh=True)


def test_renamed_expert_container_fails_loudly():
    model, _ = tiny_model("mixtral")
    for layer in model.model.layers:
        layer.mlp.expert_bank = layer.mlp.experts
        del layer.mlp.experts
    with pytest.raises(ArchitectureError):
        map_model(model, refresh=True)


def test_anatomy_is_cached_and_json_ready():
    model, _ = tiny_model("gpt2")
    first = map_model(model)
    assert map_model(model) is first
    data = first.to_dict()
    assert data["writers"][0] == ["transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_proj"]
    assert data["family"] == "gpt2"
    torch.testing.assert_close(first.embedding.weight, model.transformer.wte.weight)
