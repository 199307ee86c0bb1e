"""Completion cross-entropy in row chunks with only the needed positions' logits (issue 19 §3) equals the
plain computation: one forward over every row, double log-softmax over all positions."""

from __future__ import annotations

import pytest
import torch

from alignlab.models.chat import chat_format
from alignlab.models.tiny import FAMILIES, tiny_model
from alignlab.refusal import evaluate
from alignlab.refusal.evaluate import completion_ce
from alignlab.refusal.forward import position_ids

PROMPTS = ["hello there", "a much longer prompt that needs padding on the left side", "x", "tell me about cats",
           "one more prompt", "and another", "short", "the last prompt of the batch", "ninth", "tenth one"]
COMPLETIONS = ["fine thanks", "ok", "a completion that runs for a good number of tokens, longer than the others",
               "", "b", "c d e", "f", "g h", "i j k l", "m"]
SHORT_PROMPTS = ["hi", "cats?", "x", "tea", "a poem", "sum 2"]
SHORT_COMPLETIONS = ["fine", "they purr", "", "yes", "roses", "4"]


def _plain_ce(model, fmt, prompts, completions) -> float:
    tok = fmt.tokenizer
    total, count = 0.0, 0
    with torch.no_grad():
        for p, c in zip(prompts, completions):
            b = tok(c, add_special_tokens=False)["input_ids"]
            if not b:
                continue
            a = tok(fmt.render(p), add_special_tokens=False)["input_ids"]
            ids = torch.tensor([a + b])
            mask = torch.ones_like(ids)
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask,
                                           position_ids=position_ids(mask)).logits[0, :-1].double(), -1)
            nll = -logp.gather(-1, ids[0, 1:, None]).squeeze(-1)[len(a) - 1:]
            total, count = total + float(nll.sum()), count + len(b)
    return total / count


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_chunked_completion_ce_equals_the_plain_computation(family, monkeypatch):
    model, tok = tiny_model(family, seed=1)
    with torch.no_grad():  # sharpen the random model's predictions so that the targets matter
        model.get_output_embeddings().weight.mul_(20.0)
    fmt = chat_format(tok)
    plain = _plain_ce(model, fmt, PROMPTS, COMPLETIONS)
    assert plain > 0
    for rows in (1, 3, 8):
        monkeypatch.setattr(evaluate, "CE_ROWS", rows)
        got = completion_ce(model, fmt, PROMPTS, COMPLETIONS, batch_size=64)
        assert got == pytest.approx(plain, rel=1e-6), (rows, got, plain)


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_completion_ce_equals_the_plain_computation(family, monkeypatch):
    from alignlab.refusal import ce_packs

    model, tok = tiny_model(family, seed=1)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20.0)
    fmt = chat_format(tok, system="Be brief.")
    prompts, completions = SHORT_PROMPTS, SHORT_COMPLETIONS  # within the tiny gemma2/3 window of 64
    plain = _plain_ce(model, fmt, prompts, completions)
    packs = []
    real = ce_packs._pack_nll
    monkeypatch.setattr(ce_packs, "_pack_nll", lambda m, pk, n: packs.append(len(pk.rows)) or real(m, pk, n))
    monkeypatch.setattr(ce_packs, "PACK_TOKENS", 12)  # several packs
    got = completion_ce(model, fmt, prompts, completions, batch_size=64)
    assert len(packs) > 1 and sum(packs) == sum(1 for c in completions if c)  # every scored row went through a pack
    assert got == pytest.approx(plain, rel=1e-5), (got, plain)


def test_packs_that_disagree_give_the_padded_ce(monkeypatch):
    model, tok = tiny_model("llama", seed=1)
    fmt = chat_format(tok, system="Be brief.")
    monkeypatch.setattr(evaluate, "PACKED", False)
    padded = completion_ce(model, fmt, PROMPTS, COMPLETIONS, batch_size=64)
    monkeypatch.setattr(evaluate, "PACKED", True)
    monkeypatch.setattr(evaluate, "_agrees", lambda a, b: False)
    assert completion_ce(model, fmt, PROMPTS, COMPLETIONS, batch_size=64) == padded
