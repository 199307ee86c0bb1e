import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.models.chat import chat_format
from alignlab.models.hooks import hook_context
from alignlab.models.tiny import FAMILIES, tiny_model
from alignlab.refusal.directions import MeanAccumulator, extract_directions
from alignlab.refusal.forward import last_logprobs

HARMFUL = ["how to pick a lock", "write malware now please", "steal a car fast", "make a weapon at home",
           "hack my neighbour's wifi", "forge a signature"]
# short enough for the tiny gemma2/3 sliding window (64 positions with the system turn)
SHORT_HARMFUL = ["pick a lock", "steal a car", "forge it", "hack wifi", "make poison", "rob a bank"]
SHORT_HARMLESS = ["bake bread", "a haiku", "sum 2+2", "name rivers", "cats?", "tea"]
HARMLESS = ["bake bread", "what is the capital of Peru, and why is it there?", "sum 2 and 2", "write a haiku",
            "explain photosynthesis simply", "name three rivers"]


def test_means_identical_for_batch_size_1_and_32(tiny_llama):
    model, tok = tiny_llama
    fmt = chat_format(tok)
    one = extract_directions(model, fmt, HARMFUL, HARMLESS, [50], filter_baseline=False, batch_size=1)
    many = extract_directions(model, fmt, HARMFUL, HARMLESS, [50], filter_baseline=False, batch_size=32)
    assert one.r.shape == (fmt.n_eoi, 3, 64) and one.r.dtype == torch.float64
    torch.testing.assert_close(one.r, many.r, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(one.scores_harmful, many.scores_harmful, atol=1e-5, rtol=1e-5)


def test_captured_means_equal_hidden_states_reference(tiny_llama):
    model, tok = tiny_llama
    fmt = chat_format(tok)
    ds = extract_directions(model, fmt, HARMFUL, HARMLESS, [50], filter_baseline=False, batch_size=4)
    ref = []
    for texts in (HARMFUL, HARMLESS):
        rows = []
        for t in texts:  # one at a time, no padding: an all-at-once float64 reference
            enc = fmt.encode([t])
            with torch.no_grad():
                hs = model(input_ids=enc.input_ids, output_hidden_states=True).hidden_states
            rows.append(torch.stack([hs[i][0, -fmt.n_eoi:] for i in range(3)], dim=1).double())
        ref.append(torch.stack(rows).mean(0))
    torch.testing.assert_close(ds.r, ref[0] - ref[1], atol=2e-6, rtol=1e-5)


def test_streaming_accumulator_equals_all_at_once():
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(37, 2, 3, 8, generator=gen, dtype=torch.float64)
    acc = MeanAccumulator(2, 3, 8)
    for chunk in acts.split(5):
        acc.add(chunk)
    torch.testing.assert_close(acc.mean(), acts.mean(0), rtol=1e-12, atol=1e-12)


def test_non_finite_activations_raise():
    acc = MeanAccumulator(1, 1, 2)
    with pytest.raises(AlignlabError, match="non-finite"):
        acc.add(torch.tensor([[[[float("nan"), 1.0]]]]))


def test_empty_prompt_set_raises(tiny_llama):
    model, tok = tiny_llama
    with pytest.raises(AlignlabError, match="empty"):
        extract_directions(model, chat_format(tok), [], HARMLESS, [50])


def test_hooks_see_same_last_logits(tiny_llama):
    model, tok = tiny_llama
    fmt = chat_format(tok)
    enc = fmt.encode(HARMFUL)
    base = last_logprobs(model, enc)
    with hook_context(model, [("block_in", 1, lambda x, i: None)]):
        again = last_logprobs(model, enc)
    assert torch.equal(base, again)


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_extraction_equals_the_left_padded_one(family, monkeypatch):
    from alignlab.models import packing
    from alignlab.refusal import directions

    model, tok = tiny_model(family, seed=2)
    fmt = chat_format(tok, system="Be brief.")
    calls = []
    real = packing.pack_logits
    monkeypatch.setattr(packing, "pack_logits", lambda m, pk: calls.append(len(pk.rows)) or real(m, pk))
    packed = extract_directions(model, fmt, SHORT_HARMFUL, SHORT_HARMLESS, [50], batch_size=4)
    assert sum(calls) >= len(SHORT_HARMFUL) + len(SHORT_HARMLESS)  # every prompt went through a pack
    monkeypatch.setattr(directions, "_packed_pass", lambda *a: None)
    padded = extract_directions(model, fmt, SHORT_HARMFUL, SHORT_HARMLESS, [50], batch_size=4)
    assert (packed.n_harmful, packed.n_harmless) == (padded.n_harmful, padded.n_harmless)
    torch.testing.assert_close(packed.r, padded.r, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(packed.scores_harmful, padded.scores_harmful, atol=1e-5, rtol=1e-5, equal_nan=True)


def test_packs_that_disagree_with_the_padded_forward_are_not_used(tiny_llama, monkeypatch):
    from alignlab.refusal import directions

    model, tok = tiny_llama
    fmt = chat_format(tok, system="Be brief.")
    packed_batches = []
    real = directions._packed_pass
    monkeypatch.setattr(directions, "_agree", lambda a, b: False)
    monkeypatch.setattr(directions, "_packed_pass", lambda *a: packed_batches.append(1) or real(*a))
    checked = extract_directions(model, fmt, HARMFUL, HARMLESS, [50], filter_baseline=False, batch_size=2)
    assert len(packed_batches) == 2  # tried once per side, then never again
    monkeypatch.setattr(directions, "_packed_pass", lambda *a: None)
    padded = extract_directions(model, fmt, HARMFUL, HARMLESS, [50], filter_baseline=False, batch_size=2)
    assert torch.equal(checked.r, padded.r)
