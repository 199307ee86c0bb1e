"""Activation cache reliability (issue 12): shards verified against the manifest and rebuilt on every run,
zero-sized settings refused, an empty split leaves no manifest behind."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from alignlab.errors import AlignlabError, DataError
from alignlab.sae.activations import ActivationSource, ContextConfig, parse_hook, split_texts
from alignlab.sae.cache import MANIFEST, ActivationCache, cache_activations

TEXTS = [f"Document {i}: the quick brown fox jumps over {i * 7} lazy dogs, again and again. " * 3 for i in range(60)]
META = {"model": "tiny", "hook": "resid_post.1"}


def _source(model, tok, texts=TEXTS, batch_contexts=4):
    return ActivationSource(model, tok, parse_hook("resid_post", 1), texts, ContextConfig(16, prepend_bos=True),
                            batch_contexts)


def _cache(model, tok, out, n=900):
    return cache_activations(_source(model, tok), out, n, meta=META, rows_per_shard=200, dtype="float32",
                             progress=False)


def test_rerun_rebuilds_missing_and_damaged_shards_exactly(tiny_llama, tmp_path):
    model, tok = tiny_llama
    man = _cache(model, tok, tmp_path)
    assert [s["file"] for s in man["shards"]] == [f"shard_0000{i}.safetensors" for i in range(5)]
    before = ActivationCache(tmp_path).load_all()
    (tmp_path / "shard_00001.safetensors").unlink()
    damaged = tmp_path / "shard_00003.safetensors"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # truncated by a full disk, say
    again = _cache(model, tok, tmp_path)
    assert again["rebuilt"] == ["shard_00001.safetensors", "shard_00003.safetensors"]
    assert torch.equal(ActivationCache(tmp_path).load_all(), before)
    assert load_file(str(damaged))["token_ids"].shape == (200,)
    assert _cache(model, tok, tmp_path)["rebuilt"] == []


def test_zero_rows_per_shard_and_zero_batch_contexts_are_refused(tiny_llama, tmp_path):
    model, tok = tiny_llama
    with pytest.raises(AlignlabError, match="shard-rows"):
        cache_activations(_source(model, tok), tmp_path, 300, meta=META, rows_per_shard=0, progress=False)
    with pytest.raises(AlignlabError, match="batch-contexts"):
        _source(model, tok, batch_contexts=0)
    assert not (tmp_path / MANIFEST).exists()


def test_empty_split_leaves_no_manifest_so_a_rerun_fails_again(tiny_llama, tmp_path):
    model, tok = tiny_llama
    for _ in range(2):
        with pytest.raises(DataError, match="eval-frac"):
            cache_activations(_source(model, tok, texts=[]), tmp_path, 300, meta=META, progress=False)
        assert not (tmp_path / MANIFEST).exists()


@pytest.mark.parametrize("frac,part", [(1.5, "train"), (-0.1, "eval"), (float("nan"), "all"), (1.0, "train"),
                                       (0.0, "eval")])
def test_eval_frac_outside_its_range_names_the_flag(frac, part):
    with pytest.raises(AlignlabError, match="--eval-frac") as e:
        next(split_texts(TEXTS, part, frac))
    assert "\n" not in str(e.value) and "--text" not in str(e.value)
