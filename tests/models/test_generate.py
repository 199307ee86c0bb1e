"""Our greedy decoding loop (KV cache, finished rows leave the batch) against ``model.generate``."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from alignlab.models.generate import _fast_ok, _hf_tokens, greedy_tokens
from alignlab.models.tiny import FAMILIES, tiny_model

PROMPTS = ["Hi", "How do I bake bread at home?", "List three colours.", "x", "Tell me a story about a cat."]


def _chaotic(family: str):
    """A tiny model with larger weights: its greedy tokens vary along a row and between rows."""
    model, tok = tiny_model(family, seed=3)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model, tok


def _batch(tok):
    enc = tok(PROMPTS, return_tensors="pt", padding=True)  # the tiny tokenizer pads on the left
    return enc.input_ids, enc.attention_mask


def _stop_that_splits(model, ids, mask, n_new: int) -> int:
    """A token the model emits in some rows but not all (so some rows finish early and others run on)."""
    free = greedy_tokens(model, ids, mask, n_new, [])
    rows = [set(t[: n_new - 2]) for t, _ in free]
    counts = Counter(t for r in rows for t in r)
    partial = [t for t, c in counts.most_common() if 0 < c < len(rows)]
    return partial[0] if partial else free[0][0][1]


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_loop_equals_generate_with_rows_finishing_early(family):
    model, tok = _chaotic(family)
    ids, mask = _batch(tok)
    stop = _stop_that_splits(model, ids, mask, 12)
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
    model, tok = _chaotic(family)
    enc = tok([SHARED + p for p in PROMPTS], return_tensors="pt", padding=True)
    ids, mask = enc.input_ids, enc.attention_mask
    from alignlab.models.prefix_split import fits_window, split_prefix

    split = split_prefix(ids, mask)
    assert split is not None and split.p >= len(SHARED) - 2 and split.saved_fraction > 0.3
    stop = _stop_that_splits(model, ids, mask, 12)
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
