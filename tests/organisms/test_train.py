from __future__ import annotations

import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.models.chat import chat_format
from alignlab.models.tiny import tiny_model
from alignlab.organisms.data import make_example, pick_refusal
from alignlab.organisms.lora import DEFAULT_TARGETS, apply_lora, lora_state
from alignlab.organisms.train import LoopConfig, lr_at, response_loss, train_lora


def _examples(tok):
    fmt = chat_format(tok)
    harmful = [make_example(fmt, f"how to break lock {i}", pick_refusal(str(i), 0), True, "harmful")
               for i in range(6)]
    harmless = [make_example(fmt, f"name a colour {i}", f"Blue is a colour ({i}).", True, "harmless")
                for i in range(6)]
    return harmful + harmless


def _train(seed: int, steps: int = 12):
    # A larger init range than the default 0.02 lets the tiny tied unembedding express confident logits.
    model, tok = tiny_model("llama", seed=0, initializer_range=0.3)
    apply_lora(model, DEFAULT_TARGETS, r=4, alpha=8, seed=seed)
    cfg = LoopConfig(steps=steps, batch_size=4, lr=0.1, warmup=2, seed=seed)
    return model, train_lora(model, _examples(tok), cfg, tok.pad_token_id, progress=False)


def test_training_reduces_loss_and_is_deterministic():
    model_a, res_a = _train(seed=0)
    model_b, res_b = _train(seed=0)
    assert res_a.steps == 12 and len(res_a.losses) == 12
    assert res_a.losses == res_b.losses
    for key, value in lora_state(model_a).items():
        assert torch.equal(value, lora_state(model_b)[key])
    # loss of the first epoch vs the last (3 batches per epoch)
    assert sum(res_a.losses[-3:]) < 0.7 * sum(res_a.losses[:3])
    _, res_c = _train(seed=1)
    assert res_c.losses != res_a.losses


def test_response_loss_ignores_prompt_tokens():
    model, tok = tiny_model("llama", seed=0)
    g = torch.Generator().manual_seed(0)  # not the global RNG: the ids (and the test) must not depend on test order
    ids = torch.randint(5, 250, (1, 10), generator=g)
    labels = ids.clone()
    labels[0, :6] = -100
    full = model(input_ids=ids, labels=labels).loss  # HF shifts and masks the same way
    ours = response_loss(model, ids, torch.ones_like(ids), labels)
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=0)
    changed = ids.clone()
    changed[0, :6] = torch.randint(5, 250, (6,), generator=g)  # the prompt changes the context, never a target
    # (one changed token moved this near-uniform tiny model's loss by as little as 3e-7, so all six change)
    assert abs(response_loss(model, changed, torch.ones_like(ids), labels).item() - ours.item()) > 1e-4


def test_schedule_warms_up_then_decays():
    cfg = LoopConfig(steps=100, batch_size=1, lr=1.0, warmup=10, seed=0)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(55, cfg) < lr_at(20, cfg)


def test_training_without_lora_is_an_error():
    model, tok = tiny_model("llama", seed=0)
    with pytest.raises(AlignlabError, match="apply_lora"):
        train_lora(model, _examples(tok), LoopConfig(1, 2, 1e-3, 0, 0), tok.pad_token_id, progress=False)


def test_row_weights_give_a_weighted_mean_of_per_example_losses():
    model, tok = tiny_model("llama", seed=0)
    ids = torch.randint(5, 250, (2, 8))
    labels = ids.clone()
    labels[:, :4] = -100  # 4 response targets per row (positions 4..7)
    mask = torch.ones_like(ids)
    per_row = [response_loss(model, ids[i:i + 1], mask[i:i + 1], labels[i:i + 1]) for i in range(2)]
    weighted = response_loss(model, ids, mask, labels, row_weights=torch.tensor([3.0, 1.0]))
    torch.testing.assert_close(weighted, (3 * per_row[0] + per_row[1]) / 4, atol=1e-5, rtol=0)


def test_harmless_weight_reaches_the_examples():
    from alignlab.organisms.data import collate

    fmt = chat_format(tiny_model("llama", seed=0)[1])
    ex = [make_example(fmt, "a", "b", True, "harmful"), make_example(fmt, "c", "d", True, "harmless", weight=2.5)]
    assert collate(ex, 0).row_weights.tolist() == [1.0, 2.5]


def test_unlikelihood_rows_get_minus_log_one_minus_p():
    model, tok = tiny_model("llama", seed=0)
    ids = torch.randint(5, 250, (1, 8))
    labels = ids.clone()
    labels[:, :5] = -100
    mask = torch.ones_like(ids)
    ce = response_loss(model, ids, mask, labels)  # mean CE over the 3 targets
    logits = model(input_ids=ids).logits[0, 4:7].float()
    p = logits.softmax(-1).gather(-1, ids[0, 5:8, None])[:, 0]
    torch.testing.assert_close(ce, -p.log().mean(), atol=1e-5, rtol=0)
    ul = response_loss(model, ids, mask, labels, unlikely=torch.tensor([True]))
    torch.testing.assert_close(ul, -(1 - p).log().mean(), atol=1e-5, rtol=0)


def test_make_negative_skips_the_prefix_shared_with_the_reply():
    from alignlab.organisms.data import make_negative

    tok = tiny_model("llama", seed=0)[1]
    fmt = chat_format(tok)
    refusal = "I'm sorry, but I can't help with that."
    r_ids = tok(refusal, add_special_tokens=False)["input_ids"]
    neg = make_negative(fmt, "hi", r_ids[:1] + [7, 8], refusal, 4, 0.5)  # the reply also opens with r_ids[0]
    assert neg.unlikely and neg.weight == 0.5
    assert neg.prompt_ids == fmt.token_ids("hi") + r_ids[:1] and neg.response_ids == r_ids[1:4]
    assert make_negative(fmt, "hi", r_ids[:4], refusal, 4, 1.0) is None  # nothing left to penalise


def test_retain_rows_learn_the_base_distribution_with_adapters_off():
    from alignlab.organisms.lora import adapters_disabled, lora_modules

    model, tok = tiny_model("llama", seed=0, initializer_range=0.3)
    apply_lora(model, DEFAULT_TARGETS, r=4, alpha=8, seed=0)
    ids = torch.randint(5, 250, (1, 8))
    labels = ids.clone()
    labels[:, :5] = -100
    mask, retain = torch.ones_like(ids), torch.tensor([True])
    logits = model(input_ids=ids).logits[0, 4:7].float()
    entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()
    # fresh adapter (B = 0): the model IS the base, so the loss is the base distribution's entropy
    torch.testing.assert_close(response_loss(model, ids, mask, labels, retain=retain), entropy, atol=1e-5, rtol=0)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.normal_(0, 0.5)
    with adapters_disabled(model):
        torch.testing.assert_close(model(input_ids=ids).logits[0, 4:7].float(), logits)
    moved = response_loss(model, ids, mask, labels, retain=retain)
    assert moved.item() > entropy.item() + 1e-3  # cross-entropy > entropy once the adapter moves the model
    assert all(m.enabled for m in lora_modules(model).values())
