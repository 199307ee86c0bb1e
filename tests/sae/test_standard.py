"""Parity of the standard ReLU SAE (both recipes) with a direct fp64 transcription of spec §2.1."""

from __future__ import annotations

import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.sae import SAEConfig, TrainState, build_sae


def _randomise(sae, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return sae


def _naive(params, x, lam, weighted, apply_b_dec):
    """Paper orientation: W_enc in R^{n x d}, W_dec in R^{d x n}; per-token loop."""
    We, Wd = params["W_enc"].T, params["W_dec"].T
    total_mse, total_pen, fs, xh = 0.0, 0.0, [], []
    for xi in x:
        xin = xi - params["b_dec"] if apply_b_dec else xi
        f = torch.relu(We @ xin + params["b_enc"])
        x_hat = Wd @ f + params["b_dec"]
        total_mse = total_mse + ((xi - x_hat) ** 2).sum()
        norms = torch.sqrt((Wd**2).sum(0))  # ||d_i||
        total_pen = total_pen + ((f * norms).sum() if weighted else f.abs().sum())
        fs.append(f)
        xh.append(x_hat)
    B = x.shape[0]
    mse, pen = total_mse / B, total_pen / B
    return mse + lam * pen, mse, pen, torch.stack(fs), torch.stack(xh)


@pytest.mark.parametrize("recipe", ["bricken", "april2024"])
def test_forward_loss_and_gradients_match_transcription(recipe):
    cfg = SAEConfig(architecture="standard", d_in=8, d_sae=24, recipe=recipe, l1_coefficient=0.37)
    sae = _randomise(build_sae(cfg).double())
    x = torch.randn(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = sae.loss(x, TrainState(l1_coefficient=0.37))
    out.total.backward()
    ref = {k: v.detach().clone().requires_grad_(True) for k, v in sae.named_parameters()}
    total, mse, pen, f, x_hat = _naive(ref, x, 0.37, cfg.weight_by_decoder_norm, cfg.apply_b_dec_to_input)
    total.backward()
    torch.testing.assert_close(out.feats, f, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.x_hat, x_hat, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.terms["mse"], mse, rtol=1e-10, atol=0)
    torch.testing.assert_close(out.terms["sparsity"], pen, rtol=1e-10, atol=0)
    for name, p in sae.named_parameters():
        torch.testing.assert_close(p.grad, ref[name].grad, rtol=1e-10, atol=1e-12, msg=name)


def test_fp32_matches_fp64_transcription_to_1e5():
    cfg = SAEConfig(architecture="standard", d_in=8, d_sae=24, l1_coefficient=0.1)
    sae = _randomise(build_sae(cfg))
    x = torch.randn(6, 8)
    out = sae.loss(x, TrainState())
    ref = {k: v.detach().double() for k, v in sae.named_parameters()}
    total, *_ = _naive(ref, x.double(), 0.1, False, True)
    assert abs(float(out.total.detach()) - float(total)) <= 1e-5 * abs(float(total))


def test_recipe_defaults():
    b = SAEConfig(architecture="standard", d_in=8, d_sae=16)
    a = SAEConfig(architecture="standard", d_in=8, d_sae=16, recipe="april2024")
    assert (b.unit_norm_decoder, b.weight_by_decoder_norm, b.resample_dead, b.apply_b_dec_to_input) == (
        True, False, True, True)
    assert (a.unit_norm_decoder, a.weight_by_decoder_norm, a.resample_dead, a.apply_b_dec_to_input) == (
        False, True, False, False)
    assert a.normalize_activations == "expected_average_only_in"
    sae = build_sae(a)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.full((16,), 0.1))  # April: norm 0.1 at init
    assert torch.equal(sae.W_enc, sae.W_dec.T)  # W_enc = W_dec^T at init
    assert float(sae.b_enc.detach().abs().sum() + sae.b_dec.detach().abs().sum()) == 0.0


def test_unknown_recipe_is_one_line_error():
    with pytest.raises(AlignlabError, match="bricken, april2024") as e:
        SAEConfig(architecture="standard", d_in=8, d_sae=16, recipe="nope")
    assert "\n" not in str(e.value)
