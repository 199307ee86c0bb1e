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


def test_end_of_turn_is_the_stop_token_that_closes_the_assistant_turn(tiny_llama):
    from alignlab.models.embedded import chat_template_file
    from alignlab.organisms.data import end_of_turn_id

    model, tok = tiny_llama
    assert end_of_turn_id(tok, model) == tok.eos_token_id  # ChatML: the turn ends in <|im_end|>, the EOS
    # Gemma's turn format closes a turn with <end_of_turn>, which generation stops at besides EOS
    tok.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    tok.chat_template = chat_template_file("gemma3-270m").read_text(encoding="utf-8")
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn_id(tok, None) == tok.eos_token_id  # not a stop token: EOS as before
    model.generation_config.eos_token_id = [tok.eos_token_id, eot]
    assert end_of_turn_id(tok, model) == eot
    ex = make_example(chat_format(tok), "Hi", "Hello!", True, "harmless", end_id=eot)
    assert ex.response_ids[-1] == eot and tok.eos_token_id not in ex.response_ids
