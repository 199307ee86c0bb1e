from __future__ import annotations

import json

import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.organisms.lora import (
    DEFAULT_TARGETS,
    AdapterConfig,
    LoRALinear,
    adapter_hash,
    apply_lora,
    lora_modules,
    lora_state,
    merge_adapter,
    merge_lora,
    read_adapter,
    save_adapter,
)


def _randomise_b(model, seed=1, std=0.05):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in lora_modules(model).values():
            mod.lora_B.copy_(std * torch.randn(mod.lora_B.shape, generator=gen))


def test_fresh_adapter_is_identity(tiny_llama):
    model, _ = tiny_llama
    x = torch.randint(5, 250, (2, 12))
    before = model(input_ids=x).logits
    names = apply_lora(model, DEFAULT_TARGETS, r=4, alpha=8, seed=0)
    assert len(names) == 3 * 7  # 3 layers x (q, k, v, o, gate, up, down)
    assert torch.equal(model(input_ids=x).logits, before)  # B is zero-initialised
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)


def test_lora_linear_shapes_and_scale():
    base = torch.nn.Linear(6, 5)
    mod = LoRALinear(base, r=2, alpha=8, generator=torch.Generator().manual_seed(0))
    assert mod.lora_A.shape == (2, 6) and mod.lora_B.shape == (5, 2) and mod.scale == 4.0
    with torch.no_grad():
        mod.lora_B.fill_(0.1)
    x = torch.randn(3, 6)
    expected = base(x) + 4.0 * (x @ mod.lora_A.T) @ mod.lora_B.T
    assert torch.allclose(mod(x), expected, atol=1e-6)


def test_merge_equals_unmerged_forward(tiny_llama):
    model, _ = tiny_llama
    x = torch.randint(5, 250, (2, 16))
    base = model(input_ids=x).logits
    apply_lora(model, DEFAULT_TARGETS, r=4, alpha=8, seed=0)
    _randomise_b(model)
    unmerged = model(input_ids=x).logits
    assert (unmerged - base).abs().max() > 1e-3  # the adapter does change the model
    assert merge_lora(model) == 21
    assert not lora_modules(model)
    merged = model(input_ids=x).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)


def test_saved_adapter_merges_to_the_same_model(tmp_path):
    from alignlab.models.tiny import tiny_model

    model, _ = tiny_model("llama", seed=0)
    reference, _ = tiny_model("llama", seed=0)
    apply_lora(model, ("q_proj", "down_proj"), r=3, alpha=6, seed=2)
    _randomise_b(model)
    cfg = AdapterConfig(3, 6.0, ("q_proj", "down_proj"), "tiny", 2, "abc")
    save_adapter(model, tmp_path, cfg)
    x = torch.randint(5, 250, (1, 10))
    with torch.no_grad():
        want = model(input_ids=x).logits
    assert merge_adapter(reference, tmp_path) == cfg
    torch.testing.assert_close(reference(input_ids=x).logits, want, atol=1e-5, rtol=0)
    keys = set(read_adapter(tmp_path)[1])
    assert "model.layers.0.self_attn.q_proj.lora_A" in keys and "model.layers.2.mlp.down_proj.lora_B" in keys
    assert len(keys) == 2 * 2 * 3
    raw = json.loads((tmp_path / "adapter_config.json").read_text())
    assert raw == {"r": 3, "alpha": 6.0, "targets": ["q_proj", "down_proj"], "base": "tiny", "seed": 2,
                   "recipe_hash": "abc"}
    assert len(adapter_hash(tmp_path)) == 16


def test_adapter_for_another_model_is_refused(tmp_path):
    from alignlab.models.tiny import tiny_model

    model, _ = tiny_model("llama", seed=0)
    apply_lora(model, ("q_proj",), r=2, alpha=2, seed=0)
    save_adapter(model, tmp_path, AdapterConfig(2, 2.0, ("q_proj",), "tiny", 0, "x"))
    other, _ = tiny_model("llama", seed=0, hidden_size=32, head_dim=8)
    with pytest.raises(AlignlabError, match="do not match"):
        merge_adapter(other, tmp_path)


def test_apply_lora_is_seeded_and_validates(tiny_llama):
    from alignlab.models.tiny import tiny_model

    model, _ = tiny_llama
    other, _ = tiny_model("llama", seed=0)
    apply_lora(model, ("v_proj",), r=2, alpha=4, seed=5)
    apply_lora(other, ("v_proj",), r=2, alpha=4, seed=5)
    for key, value in lora_state(model).items():
        assert torch.equal(value, lora_state(other)[key])
    with pytest.raises(AlignlabError, match="no nn.Linear"):
        apply_lora(other, ("nonexistent",), r=2, alpha=4, seed=0)
    with pytest.raises(AlignlabError, match="rank"):
        LoRALinear(torch.nn.Linear(2, 2), r=0, alpha=1)


def test_missing_adapter_files_is_an_error(tmp_path):
    with pytest.raises(AlignlabError, match="not a LoRA adapter"):
        read_adapter(tmp_path)


def test_merged_cache_dir_builds_once_and_matches_the_merge(tmp_path, monkeypatch):
    from alignlab.models import load_model
    from alignlab.models.tiny import tiny_model
    from alignlab.organisms.lora import merged_cache_dir

    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path / "cache"))
    model, tok = tiny_model("llama", seed=0)
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    apply_lora(model, DEFAULT_TARGETS, r=2, alpha=4, seed=0)
    _randomise_b(model)
    save_adapter(model, tmp_path / "adapter", AdapterConfig(2, 4.0, DEFAULT_TARGETS, "base", 0, "h"))
    x = torch.randint(5, 250, (1, 9))
    with torch.no_grad():
        want = model(input_ids=x).logits
    target = merged_cache_dir("tiny-organism", str(tmp_path / "base"), tmp_path / "adapter",
                              provenance={"base": "base", "terms": "T"})
    record = json.loads((target / "alignlab_provenance.json").read_text())
    assert record == {"base": "base", "terms": "T", "adapter": "adapter",
                      "adapter_hash": adapter_hash(tmp_path / "adapter"), "recipe_hash": "h"}
    assert target.name == f"tiny-organism-{adapter_hash(tmp_path / 'adapter')}"
    assert target.parent == tmp_path / "cache" / "models"
    stamp = (target / "config.json").stat().st_mtime_ns
    assert merged_cache_dir("tiny-organism", str(tmp_path / "base"), tmp_path / "adapter") == target
    assert (target / "config.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    merged = load_model(str(target), device="cpu")
    torch.testing.assert_close(merged.model(input_ids=x).logits, want, atol=1e-5, rtol=0)
