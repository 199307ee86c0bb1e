"""Activation pipeline: early stop, contexts, shuffle buffer, disk cache (spec §3, §10 "Data pipeline")."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from alignlab.errors import AlignlabError, DataError
from alignlab.models.anatomy import map_model
from alignlab.sae.activations import (
    ActivationSource,
    ContextConfig,
    Hook,
    hook_of_sae,
    iter_contexts,
    parse_hook,
    run_to_hook,
    split_texts,
)
from alignlab.sae.buffer import ShuffleBuffer, TensorBatches
from alignlab.sae.cache import ActivationCache, cache_activations

TEXTS = [f"Document {i}: the quick brown fox jumps over {i * 7} lazy dogs, again and again. " * 3 for i in range(60)]


def _source(model, tok, batch_contexts=4, layer=1):
    return ActivationSource(model, tok, parse_hook("resid_post", layer), TEXTS, ContextConfig(16, prepend_bos=True),
                            batch_contexts)


def test_parse_hook_forms():
    assert parse_hook("resid_post.15") == Hook("block_out", 15)
    assert parse_hook("block_in", 3) == Hook("block_in", 3)
    assert parse_hook("mlp_out.-1", n_layers=30) == Hook("mlp_out", 29)
    assert Hook("block_in", 4).address == "resid_pre.4"
    with pytest.raises(AlignlabError, match="unknown hook site"):
        parse_hook("resid_mid.2")
    with pytest.raises(AlignlabError, match="out of range"):
        parse_hook("resid_post.3", n_layers=3)


def test_hook_of_sae_reads_address_or_layer():
    from alignlab.sae import SAEConfig

    assert hook_of_sae(SAEConfig("standard", 8, 16, hook_point="resid_post.2", hook_layer=2)) == Hook("block_out", 2)
    assert hook_of_sae(SAEConfig("standard", 8, 16, hook_point="block_in", hook_layer=1)) == Hook("block_in", 1)
    with pytest.raises(AlignlabError, match="no hook layer"):
        hook_of_sae(SAEConfig("standard", 8, 16))


@pytest.mark.parametrize("point,offset", [("block_out", 1), ("block_in", 0)])
def test_stop_at_hook_equals_full_forward_and_skips_later_modules(tiny_llama, point, offset):
    model, tok = tiny_llama
    ids = torch.tensor([next(iter_contexts(TEXTS, tok, ContextConfig(16, prepend_bos=True)))])
    full = model(ids, output_hidden_states=True).hidden_states
    anatomy = map_model(model)  # mapping traces one full forward; do it before counting calls
    calls = []
    blocks = model.model.layers
    handles = [m.register_forward_pre_hook(lambda *_a, n=name: calls.append(n))
               for name, m in [("block2", blocks[2]), ("norm", model.model.norm), ("head", model.lm_head)]]
    try:
        h = run_to_hook(model, ids, Hook(point, 1), anatomy=anatomy)
    finally:
        for hd in handles:
            hd.remove()
    assert torch.equal(h, full[1 + offset])
    assert calls == []  # block 2, the final norm and the unembedding never ran


def test_contexts_have_bos_fixed_length_and_special_positions_dropped(tiny_llama):
    model, tok = tiny_llama
    windows = list(iter_contexts(TEXTS, tok, ContextConfig(16, prepend_bos=True)))
    assert len(windows) > 20 and all(len(w) == 16 and w[0] == tok.bos_token_id for w in windows)
    no_bos = next(iter_contexts(TEXTS, tok, ContextConfig(16, prepend_bos=False)))
    assert no_bos[0] != tok.bos_token_id
    src = _source(model, tok)
    batch = next(src.batches())
    ids = torch.tensor(windows[:4])
    keep = ~torch.isin(ids, torch.tensor([tok.bos_token_id, tok.eos_token_id, tok.pad_token_id]))
    assert keep[:, 0].all() == False  # noqa: E712  (BOS)
    assert batch.rows_per_context == keep.sum(1).tolist()
    assert batch.acts.shape == (int(keep.sum()), 64) and batch.acts.dtype == torch.float32
    assert not torch.isin(batch.token_ids, torch.tensor(tok.all_special_ids)).any()
    # without BOS the first position (the attention sink) is dropped all the same
    sink = ActivationSource(model, tok, parse_hook("resid_post.1"), TEXTS, ContextConfig(16, prepend_bos=False))
    first = torch.tensor([no_bos])
    assert sink.keep_mask(first)[0, 0].item() is False and sink.keep_mask(first)[0, 1:].sum() >= 14


def test_split_texts_is_disjoint_and_complete():
    train = list(split_texts(TEXTS, "train", 0.3))
    held = list(split_texts(TEXTS, "eval", 0.3))
    assert set(train).isdisjoint(held) and sorted(train + held) == sorted(TEXTS) and held


def test_shuffle_buffer_deterministic_per_seed_and_a_permutation():
    data = torch.arange(1000, dtype=torch.float32).unsqueeze(1).repeat(1, 3)
    chunks = lambda: (data[i : i + 70] for i in range(0, 1000, 70))  # noqa: E731
    a = torch.cat(list(ShuffleBuffer(chunks(), 50, capacity=200, seed=1, drop_last=False)))
    b = torch.cat(list(ShuffleBuffer(chunks(), 50, capacity=200, seed=1, drop_last=False)))
    c = torch.cat(list(ShuffleBuffer(chunks(), 50, capacity=200, seed=2, drop_last=False)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, 0].sort().values, data[:, 0])  # every row exactly once
    assert not torch.equal(a, data)
    buf = ShuffleBuffer(chunks(), 50, capacity=200, seed=1)
    buf.skip(3)
    assert torch.equal(next(buf), a[150:200])


def test_tensor_batches_epochs_cover_rows():
    data = torch.arange(40, dtype=torch.float32).unsqueeze(1)
    got = torch.cat(list(TensorBatches(data, 10, steps=4, seed=0)))
    assert torch.equal(got[:, 0].sort().values, data[:, 0])
    again = TensorBatches(data, 10, steps=6, seed=0)
    again.skip(4)
    assert len(list(again)) == 2


def test_cache_round_trip_exact_and_manifest(tiny_llama, tmp_path):
    model, tok = tiny_llama
    ref = torch.cat(list(_source(model, tok, batch_contexts=3).rows()))[:700]
    man = cache_activations(_source(model, tok), tmp_path, 700, meta={"model": "tiny", "hook": "resid_post.1"},
                            rows_per_shard=256, dtype="float32", progress=False)
    assert man["n_tokens"] == 700 and [s["rows"] for s in man["shards"]] == [256, 256, 188]
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["d"] == 64 and on_disk["dtype"] == "float32" and on_disk["model"] == "tiny"
    assert abs(on_disk["norm_stats"]["mean_sq_norm"] - float(ref.double().pow(2).sum(1).mean())) < 1e-6
    cache = ActivationCache(tmp_path)
    assert torch.equal(cache.load_all(), ref)
    # seeded shuffled reading: deterministic per seed and a permutation of the rows
    a = torch.cat(list(cache.batches(100, seed=3, buffer_rows=300, epochs=1)))
    b = torch.cat(list(cache.batches(100, seed=3, buffer_rows=300, epochs=1)))
    assert torch.equal(a, b) and a.shape == (700, 64)
    assert torch.equal(a.sum(0), ref.sum(0)) or torch.allclose(a.sum(0), ref.sum(0), atol=1e-4)


def test_cache_resume_continues_bit_exactly(tiny_llama, tmp_path):
    model, tok = tiny_llama
    meta = {"model": "tiny", "hook": "resid_post.1"}
    full = tmp_path / "full"
    cache_activations(_source(model, tok), full, 900, meta=meta, rows_per_shard=200, dtype="float32", progress=False)
    part = tmp_path / "part"
    cache_activations(_source(model, tok), part, 500, meta=meta, rows_per_shard=200, dtype="float32", progress=False)
    # simulate a crash: the last (partial) shard is lost and the manifest says so
    man = json.loads((part / "manifest.json").read_text())
    assert man["skip_rows"] > 0  # the cursor sits inside a context
    man2 = cache_activations(_source(model, tok), part, 900, meta=meta, rows_per_shard=200, dtype="float32",
                             progress=False)
    assert man2["n_tokens"] == 900
    assert torch.equal(ActivationCache(part).load_all(), ActivationCache(full).load_all())
    with pytest.raises(AlignlabError, match="made with model="):
        cache_activations(_source(model, tok), part, 1000, meta={**meta, "model": "other"}, rows_per_shard=200,
                          dtype="float32", progress=False)


def test_cache_rejects_wrong_width_and_nan(tiny_llama, tmp_path):
    model, tok = tiny_llama
    cache_activations(_source(model, tok), tmp_path, 300, meta={"model": "tiny"}, rows_per_shard=128,
                      dtype="float32", progress=False)
    shard = tmp_path / "shard_00001.safetensors"
    good = load_file(shard)
    save_file({"activations": torch.zeros(128, 32)}, shard)
    with pytest.raises(DataError, match=r"shard_00001\.safetensors.*width d=64"):
        ActivationCache(tmp_path).load_all()
    bad = good["activations"].clone()
    bad[5, 3] = float("nan")
    save_file({"activations": bad}, shard)
    with pytest.raises(DataError, match=r"shard_00001\.safetensors: NaN/inf activation at row 5"):
        list(ActivationCache(tmp_path).chunks())
    with pytest.raises(DataError, match="no manifest.json"):
        ActivationCache(tmp_path / "nowhere")
