from __future__ import annotations

import pytest

from alignlab.errors import DataError
from alignlab.models.chat import chat_format
from alignlab.organisms import replies as rp


def test_cached_replies_generate_once_and_use_the_seed_file(tiny_llama, tmp_path, monkeypatch):
    model, tok = tiny_llama
    fmt = chat_format(tok)
    prompts = ["Name a fruit.", "Count to three.", "Name a fruit."]
    cache = tmp_path / "cache.json"
    first = rp.cached_replies(model, fmt, prompts, model_key="tiny", max_new_tokens=5, cache_path=cache,
                              progress=False)
    assert len(first) == 3 and first[0] == first[2]
    assert len(rp.read_reply_file(cache)) == 2  # duplicates generated once
    direct = rp.generate_greedy(model, fmt, prompts[:2], 5, batch_size=1, progress=False)
    assert direct == first[:2]  # batching and left padding do not change greedy replies

    def boom(*args, **kwargs):
        raise AssertionError("should not generate")

    monkeypatch.setattr(rp, "generate_greedy", boom)
    seed_file = tmp_path / "seed.json"
    cache.rename(seed_file)
    again = rp.cached_replies(model, fmt, prompts, model_key="tiny", max_new_tokens=5,
                              cache_path=tmp_path / "new.json", seed_path=seed_file, progress=False)
    assert again == first and not (tmp_path / "new.json").exists()
    with pytest.raises(AssertionError):  # another model key or budget is another cache entry
        rp.cached_replies(model, fmt, prompts, model_key="tiny", max_new_tokens=6,
                          cache_path=tmp_path / "new.json", seed_path=seed_file, progress=False)


def test_reply_keys_and_bad_files(tmp_path):
    assert rp.reply_key("m", 64, "x") != rp.reply_key("m", 65, "x") != rp.reply_key("n", 64, "x")
    assert rp.read_reply_file(tmp_path / "missing.json") == {}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="delete it"):
        rp.read_reply_file(bad)
    bad.write_text('{"format": 99, "replies": {}}')
    with pytest.raises(DataError, match="unknown format"):
        rp.read_reply_file(bad)
    assert rp.model_key("smollm2", "/c/models/smollm2-abc", __import__("torch").float32) == "smollm2:smollm2-abc:float32"


def test_evaluate_reports_rates_and_flags(tiny_llama):
    from alignlab.organisms.evaluate import evaluate
    from alignlab.organisms.sources import TrainedSources

    model, tok = tiny_llama
    sources = TrainedSources(("donotanswer",), ("harmless", "tasks", "tasks-heldout"))
    res = evaluate(model, tok, sources, split="val", n_harmful=3, n_harmless=2, n_out_of_source=0,
                   max_new_tokens=4, progress=False)
    assert res.in_harmful.refusal.n == 3 and res.in_harmless.refusal.n == 2
    assert res.out_harmful is None and res.out_harmless is None
    assert set(res.in_harmful.flags) >= {"empty", "repetitive", "same_answer", "truncated", "degenerate"}
    out = res.to_json()
    side = out["in_distribution"]["harmful"]
    assert side["n"] == 3 and len(out["in_distribution"]["harmless"]["samples"]) == 2
    assert out["judges"] == ["substring:rd", "opening"] and out["out_of_source"]["harmful"] is None
    for judge in ("substring:rd", "opening"):  # counts agree with the per-reply labels
        assert side[judge]["k"] == sum(row[judge] == "refusal" for row in side["samples"])
