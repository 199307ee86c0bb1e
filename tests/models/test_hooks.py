import pytest
import torch

from alignlab.models.hooks import hook_context
from alignlab.models.tiny import tiny_model


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_hooks_removed_even_when_body_raises(tiny_llama):
    model, _ = tiny_llama
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    base = _logits(model, ids)
    zero = lambda x, layer: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(RuntimeError, match="boom"), hook_context(model, [("block_in", 1, zero)]):
        assert not torch.equal(_logits(model, ids), base)
        raise RuntimeError("boom")
    assert torch.equal(_logits(model, ids), base)  # bitwise restored
    assert all(not b._forward_pre_hooks for b in model.model.layers)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2", "gpt_neox", "olmo2"])
def test_block_in_sees_hidden_states(family):
    model, _ = tiny_model(family)
    ids = torch.tensor([[5, 6, 7, 8]])
    seen = {}
    hooks = [("block_in", layer, lambda x, layer: seen.__setitem__(layer, x.clone())) for layer in range(3)]
    with torch.no_grad(), hook_context(model, hooks):
        out = model(input_ids=ids, output_hidden_states=True)
    for layer in range(3):
        torch.testing.assert_close(seen[layer], out.hidden_states[layer], rtol=0, atol=0)


@pytest.mark.parametrize("point", ["attn_out", "mlp_out", "block_out"])
def test_write_points_change_output(point):
    model, _ = tiny_model("gemma2")
    ids = torch.tensor([[5, 6, 7, 8]])
    base = _logits(model, ids)
    with hook_context(model, [(point, 0, lambda x, layer: x * 0)]):
        changed = _logits(model, ids)
    assert not torch.allclose(changed, base)
    assert torch.equal(_logits(model, ids), base)


def test_hooks_fire_during_generate(tiny_llama):
    model, tok = tiny_llama
    ids = torch.tensor([[5, 6, 7]])
    calls = []
    with hook_context(model, [("block_in", 2, lambda x, layer: calls.append(x.shape[1]))]):
        model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    # one prefill call of length 3, then one call per cached decoding step of length 1
    assert calls[0] == 3 and calls[1:] == [1, 1, 1]


def test_bad_layer_is_one_line_error(tiny_llama):
    from alignlab.errors import AlignlabError

    model, _ = tiny_llama
    with pytest.raises(AlignlabError, match="out of range"), hook_context(model, [("block_in", 7, lambda x, i: x)]):
        pass
