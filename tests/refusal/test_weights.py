"""Weighted ablation (issue 13 §1): kernels, interpolated directions, and the exact weight form per family."""

import copy
import math

import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.models.tiny import FAMILIES, tiny_model
from alignlab.refusal.edit import orthogonalize
from alignlab.refusal.forward import position_ids
from alignlab.refusal.intervene import ablate
from alignlab.refusal.weights import Kernel, LayerWeights, ablate_weighted, interpolate_direction

POSTNORM = {"gemma2", "gemma3_text", "olmo2"}
EXACT = [f for f in FAMILIES if f not in POSTNORM]


def _inputs():
    ids = torch.randint(5, 290, (3, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    return {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids(mask)}, mask.bool()


def test_kernel_shape():
    k = Kernel(max_weight=0.8, peak=1.5, min_weight=0.2, falloff=2.0)
    w = k.weights(6)
    assert w == pytest.approx([0.8 - 0.75 * 0.6, 0.8 - 0.25 * 0.6, 0.8 - 0.25 * 0.6, 0.8 - 0.75 * 0.6, 0.0, 0.0])
    with pytest.raises(AlignlabError):
        Kernel(max_weight=0.5, peak=1, min_weight=0.7, falloff=1)
    with pytest.raises(AlignlabError):
        Kernel(max_weight=math.nan, peak=1, min_weight=0, falloff=1)


def test_interpolated_direction():
    r = torch.arange(2 * 4 * 3, dtype=torch.float64).reshape(2, 4, 3)
    torch.testing.assert_close(interpolate_direction(r, -1, 2.0), r[-1, 2])
    torch.testing.assert_close(interpolate_direction(r, -1, 1.25), 0.75 * r[-1, 1] + 0.25 * r[-1, 2])
    torch.testing.assert_close(interpolate_direction(r, 0, 3.0), r[0, 3])
    with pytest.raises(AlignlabError):
        interpolate_direction(r, -1, 3.5)


def _weights(n_layers: int) -> LayerWeights:
    attn = Kernel(0.9, 1.2, 0.3, 1.5)
    mlp = Kernel(0.6, 0.4, 0.1, 2.5)
    return LayerWeights.from_kernels(n_layers, attn, mlp, embed=0.35)


@pytest.mark.parametrize("family", EXACT)
def test_weighted_edit_equals_weighted_hooks(family):
    model, _ = tiny_model(family)
    r = torch.randn(64, generator=torch.Generator().manual_seed(1))
    kw, mask = _inputs()
    weights = _weights(model.config.num_hidden_layers if hasattr(model.config, "num_hidden_layers")
                       else model.config.n_layer)
    assert len(set(weights.attn)) > 1 and 0 < weights.embed < 1  # genuinely partial, layer-dependent
    with torch.no_grad():
        plain = model(**kw).logits[mask]
        with ablate_weighted(model, r, weights):
            hooked = model(**kw).logits[mask]
    edited = copy.deepcopy(model)
    orthogonalize(edited, r, weights=weights)
    with torch.no_grad():
        baked = edited(**kw).logits[mask]
    torch.testing.assert_close(baked, hooked, atol=1e-4, rtol=1e-4)
    assert (hooked - plain).abs().max() > 1e-3  # the intervention does something


def test_full_weights_equal_full_ablation():
    model, _ = tiny_model("llama")
    r = torch.randn(64, generator=torch.Generator().manual_seed(2))
    kw, mask = _inputs()
    with torch.no_grad():
        with ablate(model, r):
            full = model(**kw).logits[mask]
        with ablate_weighted(model, r, LayerWeights.full(3)):
            weighted = model(**kw).logits[mask]
    torch.testing.assert_close(weighted, full, atol=1e-5, rtol=1e-5)


def test_zero_weights_are_a_no_op():
    model, _ = tiny_model("llama")
    r = torch.randn(64)
    kw, mask = _inputs()
    zero = LayerWeights((0.0,) * 3, (0.0,) * 3, 0.0)
    with torch.no_grad():
        plain = model(**kw).logits
        with ablate_weighted(model, r, zero):
            same = model(**kw).logits
    assert torch.equal(plain, same)


def test_weights_validated():
    with pytest.raises(AlignlabError):
        LayerWeights((0.5, 1.2), (0.0, 0.0))
    with pytest.raises(AlignlabError):
        LayerWeights((0.5,), (0.0, 0.0))
    w = _weights(3)
    assert LayerWeights.from_json(w.to_json()) == w
