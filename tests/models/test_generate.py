"""Our greedy decoding loop (KV cache, finished rows leave the batch) against ``model.generate``."""

from __future__ import annotations

import pytest
import torch

from alignlab.models.generate import _fast_ok, _hf_tokens, greedy_tokens
from alignlab.models.tiny import FAMILIES, chaotic_model, splitting_stop, tiny_model

PROMPTS = ["Hi", "How do I bake bread at home?", "List three colours.", "x", "Tell me a story about a cat."]


def _batch(tok):
    enc = tok(PROMPTS, return_tensors="pt", padding=True)  # the tiny tokenizer pads on the left
    return enc.input_ids, enc.attention_mask


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_loop_equals_generate_with_rows_finishing_early(family):
    model, tok = chaotic_model(family)
    ids, mask = _batch(tok)
    stop = splitting_stop(model, ids, mask, 12)
    with torch.no_grad():
        ours = greedy_tokens(model, ids, mask, 12, [stop])
        ref = _hf_tokens(model, ids, mask, 12, [stop], tok.pad_token_id)
    assert ours == ref
    assert any(f for _, f in ours)  # some row stopped ...
    lengths = {len(t) for t, _ in ours}
    assert len(lengths) > 1  # ... at a different step than another


def test_generation_config_that_changes_greedy_choices_goes_through_generate():
    model, _ = tiny_model("llama")
    assert _fast_ok(model)
    model.generation_config.repetition_penalty = 1.3
    assert not _fast_ok(model)


def test_hooks_fire_on_every_step_of_the_fast_loop():
    model, tok = tiny_model("llama")
    ids, mask = _batch(tok)
    calls: list[int] = []
    handle = model.model.layers[0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape[1]))
    try:
        with torch.no_grad():
            greedy_tokens(model, ids, mask, 5, [])
    finally:
        handle.remove()
    assert calls == [ids.shape[1], 1, 1, 1, 1]  # one prefill, then one token per step


SHARED = "You answer briefly. "  # every row starts with these tokens: the prefix is prefilled once


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prefix_prefill_equals_generate(family):
    model, tok = chaotic_model(family)
    enc = tok([SHARED + p for p in PROMPTS], return_tensors="pt", padding=True)
    ids, mask = enc.input_ids, enc.attention_mask
    from alignlab.models.prefix_split import fits_window, split_prefix

    split = split_prefix(ids, mask)
    assert split is not None and split.p >= len(SHARED) - 2 and split.saved_fraction > 0.3
    stop = splitting_stop(model, ids, mask, 12)
    with torch.no_grad():
        ours = greedy_tokens(model, ids, mask, 12, [stop])
        ref = _hf_tokens(model, ids, mask, 12, [stop], tok.pad_token_id)
    if fits_window(model, ids.shape[1] + 12):
        assert ours == ref
    assert any(f for _, f in ours) and len({len(t) for t, _ in ours}) > 1


def test_the_shared_prefix_runs_once_as_one_row():
    model, tok = tiny_model("llama")
    enc = tok([SHARED + p for p in PROMPTS], return_tensors="pt", padding=True)
    calls: list[tuple[int, int]] = []
    handle = model.model.layers[0].register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape[:2])))
    try:
        with torch.no_grad():
            greedy_tokens(model, enc.input_ids, enc.attention_mask, 3, [])
    finally:
        handle.remove()
    p = len(tok(SHARED).input_ids)
    n, t = enc.input_ids.shape
    assert calls[0][0] == 1 and calls[0][1] >= p - 1  # the prefix: one row
    assert calls[1] == (n, t - calls[0][1])  # then every row's own tokens only
    assert calls[2:] == [(n, 1), (n, 1)]
