"""The shared-prefix forward (issue 19 §2) equals the full left-padded forward, with and without hooks, on every
tiny family; it falls back to full forwards when the rows share no prefix."""

from __future__ import annotations

import pytest
import torch

from alignlab.models.chat import chat_format
from alignlab.models.prefix_split import common_prefix
from alignlab.models.tiny import FAMILIES, tiny_model
from alignlab.refusal.forward import COUNTER, last_logprobs
from alignlab.refusal.intervene import ablate, ablate_subspace, add_direction
from alignlab.refusal.shared_prefix import SharedPrefix

SYSTEM = "Be brief."
# short enough that every row fits the tiny gemma2/3 sliding window (64) and gpt2's 128 positions
PROMPTS = ["bake bread", "a poem on the sea", "x", "cats?", "three colours", "capital of France"]


def test_common_prefix_lengths():
    t = torch.tensor
    assert common_prefix([t([1, 2, 3]), t([1, 2, 4, 5]), t([1, 2])]) == 2
    assert common_prefix([t([1, 2, 3]), t([1, 2, 3])]) == 3
    assert common_prefix([t([7, 2]), t([1, 2])]) == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prefix_equals_the_full_forward_under_hooks(family):
    model, tok = tiny_model(family, seed=2)
    fmt = chat_format(tok, system=SYSTEM)
    enc = fmt.encode(PROMPTS)
    shared = SharedPrefix(model, enc)
    assert shared.ok, family
    rows = [enc.input_ids[i, enc.input_ids.shape[1] - int(n):] for i, n in enumerate(enc.attention_mask.sum(1))]
    assert shared.p == common_prefix(rows) > 10  # the system turn
    assert enc.input_ids.shape[1] < 64
    assert 0.1 < shared.saved_fraction < 1  # (gemma2/3: packs limited to their 64-token window)
    d = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.n_embd
    g = torch.Generator().manual_seed(0)
    r, r2 = torch.randn(d, generator=g), torch.randn(d, generator=g)
    for context in (lambda: ablate(model, r), lambda: add_direction(model, 4 * r, 1, 1.0),
                    lambda: ablate_subspace(model, torch.stack([r, r2]))):
        with context():
            full = last_logprobs(model, enc)
            before = COUNTER.forwards
            fast = shared.last_logprobs()
        assert COUNTER.forwards == before + 1
        assert (fast - full).abs().max() < 1e-4, family
        assert (full - shared.baseline).abs().max() > 1e-3  # the hooks changed the output, and the fast path followed
    assert (shared.last_logprobs() - last_logprobs(model, enc)).abs().max() < 1e-4


def test_no_common_prefix_falls_back_to_the_full_forward():
    from alignlab.models.chat import Encoded

    model, tok = tiny_model("llama", seed=2)
    tok.padding_side = "left"
    batch = tok(["apple pie", "zebra crossing", "moon"], padding=True, return_tensors="pt")  # no template
    enc = Encoded(batch["input_ids"], batch["attention_mask"], [0, 1, 2])
    shared = SharedPrefix(model, enc)
    assert shared.p < 4 and not shared.ok and shared.saved_fraction == 0.0
    assert torch.equal(shared.last_logprobs(), last_logprobs(model, enc))
    fmt = chat_format(tok, system=SYSTEM)
    assert not SharedPrefix(model, fmt.encode(PROMPTS[:1]), min_prefix=1).ok  # one row: nothing to share
    calls = []
    model.register_forward_pre_hook(lambda m, a, k: calls.append(k["input_ids"].shape[0]), with_kwargs=True)
    batched = SharedPrefix(model, enc, batch_size=2)  # the fallback runs its full forwards 2 rows at a time
    assert calls == [2, 1]
    torch.testing.assert_close(batched.last_logprobs(), last_logprobs(model, enc), atol=1e-6, rtol=0)


def test_a_batch_longer_than_the_sliding_window_falls_back():
    """Past the window the full forward's left-padded window and the cached one see different columns: the
    check at construction catches it and every call runs the full forward."""
    model, tok = tiny_model("gemma3_text", seed=2)  # sliding_window 64
    fmt = chat_format(tok, system="You are a careful assistant who answers in plain words and short sentences.")
    enc = fmt.encode([p * 3 for p in PROMPTS])
    assert enc.input_ids.shape[1] > 64
    shared = SharedPrefix(model, enc)
    assert shared.p > 10 and not shared.ok
    with ablate(model, torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1))):
        assert torch.equal(shared.last_logprobs(), last_logprobs(model, enc))


def test_packs_hold_the_prefix_once_and_rows_see_only_themselves():
    from alignlab.models.packing import pack_rows

    model, tok = tiny_model("qwen2", seed=2)
    fmt = chat_format(tok, system=SYSTEM)
    enc = fmt.encode(PROMPTS)
    lengths = enc.attention_mask.sum(1).tolist()
    packs = pack_rows(enc.input_ids, enc.attention_mask, pack_tokens=60)
    assert packs is not None and len(packs) > 1  # small packs: several forwards
    p = int((packs[0].segment == -1).sum())
    assert sorted(i for pk in packs for i in pk.rows) == list(range(len(PROMPTS)))
    for pk in packs:
        assert pk.ids.shape[1] == p + sum(lengths[i] - p for i in pk.rows)  # no padding, one prefix
        allowed = pk.mask(torch.float32)[0, 0] == 0  # [n, n]
        seg = pk.segment
        for q in range(pk.ids.shape[1]):
            seen = seg[allowed[q]]
            assert set(seen.tolist()) <= {-1, int(seg[q])}  # the prefix and its own row only
            assert allowed[q, : min(q + 1, p)].all() and not allowed[q, q + 1:].any()  # causal, prefix visible
    shared = SharedPrefix(model, enc, pack_tokens=60)
    assert shared.ok and len(shared.packs) == len(packs)
    with ablate(model, torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(3))):
        assert (shared.last_logprobs() - last_logprobs(model, enc)).abs().max() < 1e-4


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2", "gemma3_text", "phi3"])
def test_prefix_cache_on_packs_equals_activation_addition_by_hooks(family):
    from alignlab.models.anatomy import map_model
    from alignlab.refusal.prefix import PrefixCache

    model, tok = tiny_model(family, seed=5)
    enc = chat_format(tok, system=SYSTEM).encode(PROMPTS)
    cache = PrefixCache(model, map_model(model), enc, pack_tokens=80)
    assert cache.ok and len(cache.runs) > 1  # several packs, each run from its recorded block inputs
    d = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.n_embd
    r = 3 * torch.randn(d, generator=torch.Generator().manual_seed(4))
    for layer in (0, 1):
        with add_direction(model, r, layer, 1.0):
            ref = last_logprobs(model, enc)
        got = cache.logprobs_added(layer, r)
        assert (got - ref).abs().max() < 1e-4, (family, layer)
        assert (ref - cache.baseline).abs().max() > 1e-3


def test_the_check_runs_the_full_forward_on_a_few_rows_and_catches_a_wrong_path(monkeypatch):
    from alignlab.refusal import shared_prefix

    model, tok = tiny_model("llama", seed=2)
    fmt = chat_format(tok, system=SYSTEM)
    enc = fmt.encode(PROMPTS * 3)  # 18 rows
    widths: list[int] = []
    handle = model.model.layers[0].register_forward_hook(lambda m, i, o: widths.append(i[0].shape[0]))
    try:
        shared = SharedPrefix(model, enc, pack_tokens=60, check_rows=4)
    finally:
        handle.remove()
    assert shared.ok and len(shared.packs) > 1
    assert widths == [1] * len(shared.packs) + [4]  # the packs (one sequence each), then 4 rows in full
    assert (shared.baseline - last_logprobs(model, enc)).abs().max() < 1e-4  # the baseline is the model's own

    def skewed(model, packs, n):  # a fast path that gets one late row wrong
        out = packed(model, packs, n)
        out[-1, 0] += 5.0
        return out

    packed = shared_prefix.packed_last_logits
    monkeypatch.setattr(shared_prefix, "packed_last_logits", skewed)
    wrong = SharedPrefix(model, enc, pack_tokens=60, check_rows=4)
    assert not wrong.ok and torch.equal(wrong.baseline, last_logprobs(model, enc))  # the last pack's last row is checked


def test_prefix_cache_takes_the_callers_baseline_and_checks_against_it():
    from alignlab.models.anatomy import map_model
    from alignlab.refusal.prefix import PrefixCache

    model, tok = tiny_model("llama", seed=5)
    enc = chat_format(tok, system=SYSTEM).encode(PROMPTS)
    base = last_logprobs(model, enc)
    before = COUNTER.forwards
    cache = PrefixCache(model, map_model(model), enc, pack_tokens=80, baseline=base)
    assert cache.ok and cache.baseline is base
    assert COUNTER.forwards - before == 1  # the check only: no full forward of its own
    before = COUNTER.forwards
    PrefixCache(model, map_model(model), enc, pack_tokens=80)
    assert COUNTER.forwards - before == 2  # without it: the full forward, then the check
    assert not PrefixCache(model, map_model(model), enc, pack_tokens=80, baseline=base + 0.01).ok


def test_shared_logprobs_equal_logprobs_for():
    from alignlab.refusal.forward import logprobs_for
    from alignlab.refusal.shared_prefix import shared_logprobs

    model, tok = tiny_model("llama", seed=2)
    fmt = chat_format(tok, system=SYSTEM)
    COUNTER.forwards = 0
    fast = shared_logprobs(model, fmt, PROMPTS, 2)
    packed_forwards = COUNTER.forwards
    ref = logprobs_for(model, fmt, PROMPTS, 2)
    assert fast.device.type == "cpu" and fast.dtype == torch.float64 and fast.shape == ref.shape
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    assert packed_forwards == 2  # one pack + the check on a few rows, not 3 batches of 2


def test_shared_logprobs_under_hooks_equal_logprobs_for():
    from alignlab.refusal.forward import logprobs_for
    from alignlab.refusal.shared_prefix import shared_logprobs

    model, tok = tiny_model("qwen2", seed=2)
    fmt = chat_format(tok, system=SYSTEM)
    d = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    hooked = shared_logprobs(model, fmt, PROMPTS, 2, ablate(model, d))
    ref = logprobs_for(model, fmt, PROMPTS, 2, ablate(model, d))
    torch.testing.assert_close(hooked, ref, atol=1e-5, rtol=1e-5)
    assert (hooked - shared_logprobs(model, fmt, PROMPTS, 2)).abs().max() > 1e-3  # the hooks acted
