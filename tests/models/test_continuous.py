"""Continuous batching (models/continuous.py): finished rows are replaced by waiting prompts, tokens unchanged."""

from __future__ import annotations

import pytest
import torch

from alignlab.models import continuous
from alignlab.models.continuous import Unsupported, greedy_stream, supported
from alignlab.models.generate import _hf_tokens, greedy_tokens
from alignlab.models.tiny import FAMILIES, chaotic_model, splitting_stop, tiny_model

PROMPTS = ["Hi", "How do I bake bread at home?", "List three colours.", "x", "Tell me a story about a cat."]
SHARED = "You answer briefly. "  # every row starts with these tokens

LONG = [SHARED + p for p in PROMPTS] + [SHARED + p + " Please." for p in PROMPTS]
SHORT = ["ab Hi", "ab x", "ab List", "ab cat", "ab Tell me", "ab a b c"]  # fit gemma's 64-token window


def _rows(ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    return [ids[i, ids.shape[1] - int(mask[i].sum()):] for i in range(ids.shape[0])]


def _case(family: str, prompts: list[str]):
    model, tok = chaotic_model(family)
    enc = tok(prompts, return_tensors="pt", padding=True)
    stop = splitting_stop(model, enc.input_ids, enc.attention_mask, 12)
    with torch.no_grad():
        ref = _hf_tokens(model, enc.input_ids, enc.attention_mask, 12, [stop], tok.pad_token_id)
    return model, _rows(enc.input_ids, enc.attention_mask), stop, ref


@pytest.mark.parametrize("family", FAMILIES)
def test_stream_equals_generate_whatever_the_batch(family):
    model, rows, stop, ref = _case(family, LONG)
    if not supported(model, rows, 12):  # a sliding window shorter than prompt + reply: the short prompts
        model, rows, stop, ref = _case(family, SHORT)
    assert supported(model, rows, 12)
    for batch in (1, 3, 4, len(rows)):
        assert greedy_stream(model, rows, 12, [stop], batch, min_prefix=1) == ref, batch
    assert any(f for _, f in ref) and len({len(t) for t, _ in ref}) > 1  # rows finish at different steps


def test_sliding_window_shorter_than_the_reply_is_not_streamed():
    model, tok = tiny_model("gemma3_text")
    enc = tok(LONG, return_tensors="pt", padding=True)
    rows = _rows(enc.input_ids, enc.attention_mask)
    assert not supported(model, rows, 64)
    assert supported(tiny_model("llama")[0], rows, 64)


def test_finished_rows_are_replaced_and_left_pads_are_cut(monkeypatch):
    model, rows, stop, ref = _case("llama", LONG)
    merges, widths, decode_rows = [], [], []
    merge, step = continuous._merge, continuous._step

    def spy_merge(model, a, b):
        merges.append((len(a.rows), len(b.rows)))
        return merge(model, a, b)

    def spy_step(model, live, choice):
        widths.append((bool(live.mask[:, 0].any()), live.mask.shape[1], int(live.mask.sum(1).max())))
        decode_rows.append(len(live.rows))
        return step(model, live, choice)

    monkeypatch.setattr(continuous, "_merge", spy_merge)
    monkeypatch.setattr(continuous, "_step", spy_step)
    done: list[int] = []
    assert greedy_stream(model, rows, 12, [stop], 4, on_done=done.append, min_prefix=1) == ref
    assert merges and all(a + b <= 4 for a, b in merges)  # waiting rows joined live ones, never above the batch
    assert max(decode_rows) == 4
    assert all(first for first, _, _ in widths)  # no column is padding in every live row
    assert all(width >= longest for _, width, longest in widths)
    assert sum(done) == len(rows)


def test_the_shared_prefix_runs_once_per_call():
    model, tok = tiny_model("llama")
    enc = tok(LONG, return_tensors="pt", padding=True)
    rows = _rows(enc.input_ids, enc.attention_mask)
    seen: list[torch.Tensor] = []
    handle = model.model.embed_tokens.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    try:
        greedy_stream(model, rows, 3, [], 4)
    finally:
        handle.remove()
    prefix = seen[0]
    assert prefix.shape[0] == 1 and prefix.shape[1] >= len(tok(SHARED).input_ids) - 1  # once, as one row
    assert torch.equal(prefix[0], rows[0][: prefix.shape[1]])
    p = prefix.shape[1]
    prefills = [ids for ids in seen[1:] if ids.shape[1] > 1]
    assert len(prefills) >= 2  # the first rows, then refills as rows finish
    assert all(ids.shape[0] == 1 for ids in prefills)  # packs: the rows' own tokens end to end, no padding
    for ids in prefills:  # later forwards run each row's own tokens only (no row starts with the prefix again)
        assert not torch.equal(ids[0, :p], prefix[0])
    assert torch.equal(torch.cat([ids[0] for ids in prefills]), torch.cat([r[p:] for r in rows]))


def test_hooks_act_on_streamed_rows_as_on_generate():
    model, rows, stop, _ = _case("qwen2", LONG)
    tok = tiny_model("qwen2")[1]
    enc = tok(LONG, return_tensors="pt", padding=True)
    shift = 0.5 * torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    handle = model.model.layers[1].register_forward_hook(lambda m, i, o: (o[0] + shift, *o[1:])
                                                         if isinstance(o, tuple) else o + shift)
    try:
        with torch.no_grad():
            ref = _hf_tokens(model, enc.input_ids, enc.attention_mask, 12, [stop], tok.pad_token_id)
            plain = greedy_tokens(model, enc.input_ids, enc.attention_mask, 12, [stop])
        assert greedy_stream(model, rows, 12, [stop], 3) == ref == plain
    finally:
        handle.remove()


def test_generate_greedy_falls_back_to_the_batch_loop(monkeypatch):
    from alignlab.models.chat import chat_format
    from alignlab.models.generate import generate_greedy

    model, tok = tiny_model("llama")
    fmt = chat_format(tok)
    want = generate_greedy(model, fmt, PROMPTS, 6, 2, progress=False)

    def refuse(*a, **k):
        raise Unsupported("test")

    monkeypatch.setattr(continuous, "greedy_stream", refuse)
    assert generate_greedy(model, fmt, PROMPTS, 6, 2, progress=False) == want
    monkeypatch.setattr(continuous, "ENABLED", False)
    assert generate_greedy(model, fmt, PROMPTS, 6, 2, progress=False) == want


def _prefix_and_rows(family: str):
    model, rows, stop, ref = _case(family, LONG)
    if not supported(model, rows, 12):
        model, rows, stop, ref = _case(family, SHORT)
    p = continuous.shared_length(rows, 1) or 0
    kv = continuous._prefix_kv(model, rows[0][:p]) if p else None
    return model, rows, stop, ref, p, kv


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_prefill_equals_the_left_padded_one(family):
    model, rows, _, _, p, kv = _prefix_and_rows(family)
    with torch.no_grad():
        packed = continuous._admit_packed(model, rows, list(range(len(rows))), p, kv)
        padded = continuous._admit_padded(model, rows, list(range(len(rows))), p, kv)
    assert torch.equal(packed.mask, padded.mask) and torch.equal(packed.nxt, padded.nxt)
    assert packed.rows == padded.rows
    torch.testing.assert_close(packed.logits, padded.logits, atol=1e-5, rtol=1e-5)
    real = padded.mask.bool()  # [b, T]: the cache agrees wherever a row has a real token
    for (ka, va), (kb, vb) in zip(continuous._tensors(packed.cache, real.shape[1]),
                                  continuous._tensors(padded.cache, real.shape[1])):
        torch.testing.assert_close(ka.transpose(1, 2)[real], kb.transpose(1, 2)[real], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(va.transpose(1, 2)[real], vb.transpose(1, 2)[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pack_tokens", [1, 7, 10_000])
def test_pack_size_does_not_change_tokens(monkeypatch, pack_tokens):
    model, rows, stop, ref, _, _ = _prefix_and_rows("llama")
    forwards: list[tuple[int, int]] = []
    handle = model.model.embed_tokens.register_forward_pre_hook(lambda m, a: forwards.append(tuple(a[0].shape)))
    monkeypatch.setattr(continuous, "PACK_TOKENS", pack_tokens)
    try:
        assert greedy_stream(model, rows, 12, [stop], 4, min_prefix=1) == ref
    finally:
        handle.remove()
    packs = [n for b, n in forwards[1:] if b == 1 and n > 1]
    longest_own = max(int(r.numel()) for r in rows) - continuous.shared_length(rows, 1)
    assert max(packs) <= max(pack_tokens, longest_own)  # a row longer than the pack gets one alone


def test_a_cache_that_cannot_be_regrouped_takes_the_padded_prefill(monkeypatch):
    model, rows, stop, ref, _, _ = _prefix_and_rows("qwen2")

    def unsupported(*args, **kwargs):
        raise Unsupported("test")

    monkeypatch.setattr(continuous, "_admit_packed", unsupported)
    assert greedy_stream(model, rows, 12, [stop], 4, min_prefix=1) == ref
