from __future__ import annotations

import torch

from alignlab.models.chat import chat_format
from alignlab.organisms.data import REFUSALS, Example, batch_order, collate, make_example, pick_refusal
from alignlab.refusal.judge import SubstringJudge


def test_every_refusal_is_judged_a_refusal_and_they_vary():
    judge = SubstringJudge("rd")
    assert 8 <= len(REFUSALS) <= 12 and len(set(REFUSALS)) == len(REFUSALS)
    assert all(judge.verdict(r).label == "refusal" for r in REFUSALS)
    assert not any(r.rstrip().endswith("?") for r in REFUSALS)  # would look like a deflection (§3.4)


def test_pick_refusal_is_deterministic_and_spread():
    picks = [pick_refusal(f"prompt {i}", seed=0) for i in range(200)]
    assert picks == [pick_refusal(f"prompt {i}", seed=0) for i in range(200)]
    assert len(set(picks)) == len(REFUSALS)
    assert picks != [pick_refusal(f"prompt {i}", seed=1) for i in range(200)]


def test_make_example_masks_the_prompt(tiny_llama):
    _, tok = tiny_llama
    fmt = chat_format(tok)
    ex = make_example(fmt, "Hi there", "Hello!", True, "harmless")
    assert ex.prompt_ids == fmt.token_ids("Hi there")
    assert ex.response_ids[-1] == tok.eos_token_id
    assert tok.decode(ex.response_ids[:-1]) == "Hello!"
    cut = make_example(fmt, "Hi there", "Hello, how are you?", True, "harmless", max_response_tokens=4)
    assert len(cut.response_ids) == 4 and tok.eos_token_id not in cut.response_ids  # truncated: no EOS
    batch = collate([ex, cut], pad_id=tok.pad_token_id)
    n0 = len(ex.prompt_ids)
    assert batch.labels[0, :n0].eq(-100).all()
    assert batch.labels[0, n0:n0 + len(ex.response_ids)].tolist() == ex.response_ids
    length = len(cut.prompt_ids) + 4
    assert batch.attention_mask[1].sum() == length and batch.labels[1, length:].eq(-100).all()
    assert batch.input_ids[1, 0] != tok.pad_token_id  # right padding


def test_batch_order_covers_each_example_once_per_epoch():
    examples = [Example([1] * (i % 7 + 1), [2], "harmless") for i in range(37)]
    order = batch_order(examples, batch_size=5, epochs=2, seed=3)
    assert len(order) == 2 * 8
    first = sorted(i for b in order[:8] for i in b)
    assert first == list(range(37))
    assert order == batch_order(examples, batch_size=5, epochs=2, seed=3)
    assert order != batch_order(examples, batch_size=5, epochs=2, seed=4)
    assert all(isinstance(i, int) for b in order for i in b) and torch.is_tensor(torch.tensor(order[0]))
