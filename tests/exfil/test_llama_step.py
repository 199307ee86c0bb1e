"""The lean Llama one-token forward against the model's own forward: equal logits (torch.equal) for every
compute dtype, through cache slides, and the fused int4 projections against the separate ones.

The lean step runs grouped-query attention in HF's ``pack_gqa`` form; the reference HF forward is made to
take that path too (``hf_packs_gqa``), since its default ``enable_gqa`` kernel rounds differently."""

from __future__ import annotations

import copy

import pytest
import torch

from alignlab.exfil.kvstep import HFStep, make_stepper
from alignlab.exfil.llama_step import LlamaStep, lean_weights
from alignlab.exfil.lm import LMProbabilityModel, deterministic_torch
from alignlab.exfil.quantlinear import Int4Linear, int4_linears

FUSABLE = {"num_attention_heads": 8, "num_key_value_heads": 4, "intermediate_size": 128}
"""q 128, k/v 64, gate/up 128 outputs: multiples of the int4 packing block, so the int4 projections fuse."""


def sdpa_llama(seed: int = 0, **overrides):
    from alignlab.models.tiny import tiny_model

    model, tok = tiny_model("llama", seed=seed, **overrides)
    model.config._attn_implementation = "sdpa"
    return model, tok


@pytest.fixture
def hf_packs_gqa(monkeypatch):
    """HF's SDPA attention packs the query heads of a single query token (its path when it cannot pass
    ``enable_gqa``), the form the lean step uses."""
    import transformers.integrations.sdpa_attention as hf_sdpa

    monkeypatch.setattr(hf_sdpa, "use_gqa_in_sdpa", lambda *args, **kwargs: False)


def prepared(model, dtype: str):
    model = copy.deepcopy(model).to(torch.bfloat16 if dtype == "int4" else getattr(torch, dtype)).eval()
    if dtype == "int4":
        int4_linears(model)
    return model


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int4"])
@pytest.mark.parametrize(("rows", "shape"), [(1, {}), (3, {}), (2, FUSABLE)])
def test_lean_logits_equal_hf_forward_through_slides(dtype, rows, shape, hf_packs_gqa):
    model = prepared(sdpa_llama(**shape)[0], dtype)
    weights = lean_weights(model)
    assert weights is not None and weights.groups == 2
    if dtype == "int4":  # the fusable shape runs q/k/v and gate/up as one kernel call each
        assert weights.layers[0].qkv.fused == weights.layers[0].gate_up.fused == bool(shape)
    capacity, keep = 12, 5
    ref, lean = HFStep(model, capacity), LlamaStep(weights, rows, capacity)
    gen = torch.Generator().manual_seed(rows)
    cached = 0
    with deterministic_torch(1):
        for pos in range(40):  # slides at 12 cached entries: three of them
            ids = torch.randint(0, 300, (rows,), generator=gen).tolist()
            want, got = ref.forward(ids, pos), lean.forward(ids, pos)
            assert got.dtype == torch.float32 and got.shape == (rows, 300)
            assert torch.equal(got, want), (pos, (got - want).abs().max())
            cached += 1
            if cached == capacity:
                ref.slide(keep)
                lean.slide(keep)
                cached = keep + 1
    assert lean.length == ref.cache.layers[0].length


def test_fused_int4_projection_equals_separate_calls():
    g = torch.Generator().manual_seed(3)
    parts = []
    for n in (64, 128, 32):  # the last part may have any size
        lin = torch.nn.Linear(96, n, bias=True)
        lin.weight.data = torch.randn(n, 96, generator=g)
        lin.bias.data = torch.randn(n, generator=g)
        parts.append(Int4Linear.from_linear(lin))
    fused = Int4Linear.concat(parts)
    x = torch.randn(5, 96, generator=g).bfloat16()
    assert torch.equal(fused(x), torch.cat([p(x) for p in parts], -1))
    with pytest.raises(ValueError, match="bias"):
        Int4Linear.concat([parts[0], Int4Linear(parts[1].w_packed, parts[1].scale_zero, None, 96)])
    assert not Int4Linear.can_concat([parts[2], parts[0]])  # 32 rows, then more: the packing blocks would mix
    wrong = Int4Linear(torch.cat([parts[2].w_packed, parts[0].w_packed]),
                       torch.cat([parts[2].scale_zero, parts[0].scale_zero], 1), None, 96)
    assert not torch.equal(wrong(x), torch.cat([parts[2](x), parts[0](x)], -1) - torch.cat([parts[2].bias,
                                                                                            parts[0].bias]))


def test_lean_logits_equal_hf_forward_without_gqa():
    """As many KV heads as query heads: HF has one SDPA path, and the lean step matches it unpatched."""
    model = prepared(sdpa_llama(num_key_value_heads=4)[0], "bfloat16")
    weights = lean_weights(model)
    assert weights is not None and weights.groups == 1
    ref, lean = HFStep(model, 8), LlamaStep(weights, 2, 8)
    with deterministic_torch(1):
        for pos in range(7):
            assert torch.equal(lean.forward([3 + pos, 40], pos), ref.forward([3 + pos, 40], pos))


def test_packed_gqa_is_attention():
    """The packed form is exact attention: close to the enable_gqa kernel and to an eager float64 softmax."""
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, 6, 1, 16, generator=g)  # [rows, n_q, 1, D], 3 query heads per KV head
    k, v = torch.randn(2, 2, 50, 16, generator=g), torch.randn(2, 2, 50, 16, generator=g)
    packed = torch.nn.functional.scaled_dot_product_attention(q.view(2, 2, 3, 16), k, v, scale=0.25).view(2, 6, 1, 16)
    kr, vr = k.repeat_interleave(3, 1).double(), v.repeat_interleave(3, 1).double()
    eager = torch.softmax(q.double() @ kr.transpose(-1, -2) * 0.25, -1) @ vr
    assert torch.allclose(packed.double(), eager, atol=1e-5)
    gqa = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.25, enable_gqa=True)
    assert torch.allclose(packed, gqa, atol=1e-5)


def test_only_plain_sdpa_llamas_take_the_lean_path():
    from alignlab.models.tiny import tiny_model

    model, _ = sdpa_llama()
    assert lean_weights(model) is not None
    assert isinstance(make_stepper(model, 2, 8, lean_weights(model)), LlamaStep)
    assert isinstance(make_stepper(model, 2, 8, None), HFStep)
    eager, _ = tiny_model("llama", seed=0)  # eager attention rounds differently: its own forward
    assert lean_weights(eager) is None
    assert lean_weights(sdpa_llama(hidden_act="gelu")[0]) is None
    assert lean_weights(sdpa_llama(rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                     "rope_theta": 10000.0})[0]) is None
    qwen, _ = tiny_model("qwen2", seed=0)
    qwen.config._attn_implementation = "sdpa"
    assert lean_weights(qwen) is None


def test_coder_uses_the_lean_path_and_matches_the_hf_path(hf_packs_gqa):
    """The probability model picks the lean stepper for an SDPA Llama; its frequencies equal those of the
    same model forced onto the HF forward, so both paths code the same bits."""
    from alignlab.exfil.coder import compress, decompress

    model, tok = sdpa_llama()
    lean = LMProbabilityModel(model, tok, "tiny", wctx=16)
    ref = LMProbabilityModel(model, tok, "tiny", wctx=16)
    ref._lean = None
    assert lean._lean is not None
    text = ("lean and reference paths code the same bits, through several window slides " * 3).encode()
    a, b = compress(text, lean, streams=2), compress(text, ref, streams=2)
    assert isinstance(lean._cache, LlamaStep) and isinstance(ref._cache, HFStep)
    assert a.blob == b.blob
    assert decompress(a.blob, ref) == text and decompress(b.blob, lean) == text
