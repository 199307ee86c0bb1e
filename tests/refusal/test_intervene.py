import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.models.chat import chat_format
from alignlab.models.hooks import hook_context
from alignlab.models.tiny import tiny_model
from alignlab.refusal.forward import position_ids
from alignlab.refusal.intervene import ablate, add_direction, project_out


def _kw(tok):
    enc = chat_format(tok).encode(["hello there", "a longer prompt for padding"])
    return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask,
            "position_ids": position_ids(enc.attention_mask)}


def test_leaving_context_restores_logits_bitwise(tiny_llama):
    model, tok = tiny_llama
    kw = _kw(tok)
    with torch.no_grad():
        base = model(**kw).logits
        with ablate(model, torch.randn(64)):
            changed = model(**kw).logits
        after = model(**kw).logits
    assert not torch.equal(base, changed) and torch.equal(base, after)


def test_ablation_is_idempotent_and_block_inputs_r_free(tiny_llama):
    model, tok = tiny_llama
    r = torch.randn(64)
    r_hat = r / r.norm()
    x = torch.randn(5, 64)
    once = project_out(x, r_hat)
    torch.testing.assert_close(project_out(once, r_hat), once)
    seen = []
    probe = [("block_in", i, lambda x, i: seen.append(float(((x @ r_hat).abs() / x.norm(dim=-1).clamp_min(1e-6)).max())))
             for i in range(3)]
    with torch.no_grad(), ablate(model, r), hook_context(model, probe):
        model(**_kw(tok))
    assert max(seen) <= 1e-6


def test_hooked_generation_same_with_and_without_kv_cache(tiny_llama):
    model, tok = tiny_llama
    enc = chat_format(tok).encode(["tell me a story"])
    r = torch.randn(64)
    with ablate(model, r):
        cached = model.generate(enc.input_ids, attention_mask=enc.attention_mask, max_new_tokens=8,
                                do_sample=False, use_cache=True, pad_token_id=0)
        uncached = model.generate(enc.input_ids, attention_mask=enc.attention_mask, max_new_tokens=8,
                                  do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)


def test_actadd_hook_equals_bias_form():
    """+r at resid_pre[l] equals setting block l-1's down-projection bias to r (tiny llama, mlp_bias)."""
    model, tok = tiny_model("llama")
    kw = _kw(tok)
    r = torch.randn(64) * 0.5
    with torch.no_grad(), add_direction(model, r, layer=2):
        hooked = model(**kw).logits
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.bias.add_(r)
        biased = model(**kw).logits
    torch.testing.assert_close(hooked, biased, atol=1e-5, rtol=1e-5)


def test_wrong_width_direction_is_one_line_error(tiny_llama):
    model, _ = tiny_llama
    with pytest.raises(AlignlabError, match="width 64"), ablate(model, torch.randn(10)):
        pass
