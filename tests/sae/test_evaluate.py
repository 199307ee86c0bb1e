"""Evaluation metrics (spec §5, §10 "Metric sanity") on a tiny random llama."""

from __future__ import annotations

import math

import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.sae import SAEConfig, build_sae
from alignlab.sae.activations import parse_hook
from alignlab.sae.evaluate import EvalConfig, evaluate_saes, format_table, json_ready

D = 64
TEXTS = [f"Evaluation text {i}: a sentence about the number {i * 13} and its friends. " * 3 for i in range(80)]
CFG = EvalConfig(tokens=600, context_size=24, batch_contexts=6)


def scaled_identity(c: float) -> torch.nn.Module:
    """A standard SAE with x̂ = c·x exactly: W_enc = [I, -I], W_dec = c·[I; -I] (ReLU(x) - ReLU(-x) = x)."""
    sae = build_sae(SAEConfig("standard", D, 2 * D, hook_point="resid_post.1", hook_layer=1))
    eye = torch.eye(D)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(c * torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


@pytest.fixture(scope="module")
def results():
    from alignlab.models.tiny import tiny_model

    model, tok = tiny_model("llama", seed=0)
    saes = [scaled_identity(1.0), scaled_identity(0.0), scaled_identity(0.5)]
    return evaluate_saes(model, tok, saes, parse_hook("resid_post.1"), TEXTS, CFG, names=["id", "zero", "half"],
                         progress=False)


def test_identity_reconstruction_is_perfect(results):
    r = results[0]
    assert r["n_tokens"] >= 600
    assert r["fvu"] == 0 and r["mse"] == 0 and r["fvu_residual_var"] == 0
    assert r["ce_loss_score"] == pytest.approx(1.0, abs=1e-12)
    assert r["delta_lm_loss"] == pytest.approx(0.0, abs=1e-12)
    assert r["kl_div_with_sae"] == pytest.approx(0.0, abs=1e-9)
    assert r["shrinkage_gamma"] == pytest.approx(1.0, abs=1e-6)
    assert r["cossim"] == pytest.approx(1.0, abs=1e-6)


def test_zero_reconstruction_recovers_nothing(results):
    r = results[1]
    assert r["ce_loss_with_ablation"] > r["ce_loss_without_sae"]  # CE_zero > CE_clean
    assert r["ce_loss_score"] == pytest.approx(0.0, abs=1e-9)
    assert r["kl_div_with_sae"] == pytest.approx(r["kl_div_with_ablation"], rel=1e-9)
    assert r["kl_div_score"] == pytest.approx(0.0, abs=1e-9)
    assert r["l2_norm_out"] == 0


def test_scaled_reconstruction_gamma_and_fvu(results):
    r, ident = results[2], results[0]
    assert r["shrinkage_gamma"] == pytest.approx(0.5, rel=1e-6)
    assert r["l2_ratio"] == pytest.approx(0.5, rel=1e-6)
    # x̂ = x/2: E||x - x̂||² = E||x||²/4, so FVU = E||x||² / (4 E||x - μ||²)
    ex2 = ident["l2_norm_in"] ** 2
    assert r["mse"] == pytest.approx(ex2 / 4, rel=1e-5)
    assert 0 < r["ce_loss_score"] < 1 and r["delta_lm_loss"] > 0
    # fvu_residual_var ignores the mean error, so it is below the plain FVU when the mean is not zero
    assert r["fvu_residual_var"] <= r["fvu"] + 1e-9


def test_sparsity_fractions(results):
    r = results[0]
    # latent i fires where x_i > 0, latent D+i where x_i < 0: L0 = D for generic x
    assert r["l0"] == pytest.approx(D, abs=0.01)
    fires = 10 ** r["log10_feature_density"]
    assert r["frac_dead"] == pytest.approx(float((fires < 1e-9).float().mean()))
    assert r["frac_dense"] == pytest.approx(float((fires > 0.1).float().mean()), abs=1e-6)


def test_fvu_variants_agree_on_centred_data():
    from alignlab.sae.evaluate import _Acc, _finish

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 8, generator=gen)
    x = x - x.mean(0)
    xh = x + 0.1 * torch.randn(500, 8, generator=gen)
    xh = xh - (xh - x).mean(0)  # centred error too
    acc = _Acc(8, 4, torch.device("cpu"))
    acc.add(x, torch.ones(500, 4), xh)
    lm = {"ce_clean": 1.0, "ce_zero": 2.0, "kl_zero": 1.0}
    r = _finish("s", acc, 1.5, 0.5, lm, 500, parse_hook("resid_post.0"), EvalConfig())
    assert r["fvu"] == pytest.approx(r["fvu_batch"], rel=1e-9)
    assert r["fvu"] == pytest.approx(r["fvu_residual_var"], rel=1e-9)
    assert r["ce_loss_score"] == pytest.approx(0.5) and r["kl_div_score"] == pytest.approx(0.5)


def test_tables_and_json(results):
    text = format_table(results)
    md = format_table(results, "markdown")
    assert text.splitlines()[0].startswith("SAE") and len(text.splitlines()) == 4
    assert md.splitlines()[1].startswith("|---") and "| zero |" in md
    j = json_ready(results[1])
    assert "log10_feature_density" not in j and j["shrinkage_gamma"] is None  # NaN (0/0) -> null
    assert not any(isinstance(v, float) and math.isnan(v) for v in j.values())


def test_width_mismatch_is_one_line_error():
    from alignlab.models.tiny import tiny_model

    model, tok = tiny_model("llama", seed=0)
    bad = build_sae(SAEConfig("standard", 32, 64))
    with pytest.raises(AlignlabError, match="d_in=32 does not match the model's d=64"):
        evaluate_saes(model, tok, [bad], parse_hook("resid_post.1"), TEXTS, CFG, progress=False)
