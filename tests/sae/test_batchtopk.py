"""BatchTopK (arXiv 2412.06410) and Matryoshka (arXiv 2503.17547): selection, theta EMA, inference, prefixes."""

from __future__ import annotations

import json

import pytest
import torch

from alignlab.sae import SAEConfig, TrainState, build_sae, load_sae, save_sae

D, N, K, B = 8, 32, 3, 10


def _sae(arch="batchtopk", seed=0, **kw):
    sae = build_sae(SAEConfig(architecture=arch, d_in=D, d_sae=N, k=K, **kw)).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.4)
        sae.b_enc.add_(3.0)  # all pre-activations positive
    return sae


def _x(seed=1):
    return torch.randn(B, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_keeps_exactly_B_times_k_over_the_batch():
    sae, x = _sae(), _x()
    out = sae.loss(x, TrainState())
    assert int((out.feats > 0).sum()) == B * K
    assert len(set((out.feats > 0).sum(-1).tolist())) > 1  # L0 varies per token
    with torch.no_grad():
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        kth = torch.relu(pre).flatten().sort(descending=True).values[B * K - 1]
        torch.testing.assert_close(out.feats, torch.relu(pre) * (pre >= kth).double())


def test_threshold_saelens_estimator_is_a_running_mean_then_an_ema():
    sae = _sae()
    assert float(sae.threshold) == 0.0
    mins = []
    for step, seed in ((0, 1), (1, 2), (150, 3)):
        out = sae.loss(_x(seed), TrainState(step=step))
        mins.append(float(out.feats[out.feats > 0].min()))
        if step == 0:
            assert float(sae.threshold) == mins[0]  # no pull towards the initial 0 (issue 14)
        elif step == 1:
            assert float(sae.threshold) == pytest.approx((mins[0] + mins[1]) / 2, rel=1e-12)
    assert float(sae.threshold) == pytest.approx(0.99 * (mins[0] + mins[1]) / 2 + 0.01 * mins[2], rel=1e-12)
    assert sae.threshold.dtype == torch.float64


def test_held_out_l0_after_a_short_run_is_within_10_percent_of_k():
    """Issue 14: the inference threshold from a short run gave held-out L0 42.5 for k = 32 (biased EMA)."""
    from alignlab.sae.trainer import TrainConfig, train_saes

    g = torch.Generator().manual_seed(0)
    mix = torch.randn(16, 16, generator=g)
    data = [torch.randn(64, 16, generator=g) @ mix for _ in range(70)]
    k = 4
    for arch in ("batchtopk", "matryoshka"):
        sae = build_sae(SAEConfig(architecture=arch, d_in=16, d_sae=64, k=k))
        cfg = TrainConfig(total_steps=60, batch_size=64, lr=1e-3, lr_warmup_steps=5, device="cpu")
        trained = train_saes([sae], iter(data[:60]), cfg, progress=False)[0].sae.eval()
        with torch.no_grad():
            l0 = float((trained.encode(torch.cat(data[60:])) > 0).sum(-1).float().mean())
        assert abs(l0 - k) <= 0.1 * k, (arch, l0)


def test_matryoshka_default_widths_are_nested():
    sae = build_sae(SAEConfig(architecture="matryoshka", d_in=D, d_sae=64, k=K))
    assert sae.cfg.matryoshka_widths == (4, 8, 16, 32, 64)
    assert build_sae(SAEConfig(architecture="matryoshka", d_in=D, d_sae=6, k=K)).cfg.matryoshka_widths == (1, 3, 6)


def test_dictionary_learning_estimator_starts_at_step_1000():
    sae, x = _sae(threshold_estimator="dictionary_learning"), _x()
    sae.loss(x, TrainState(step=10))
    assert float(sae.threshold) == -1.0
    out = sae.loss(x, TrainState(step=1000))
    assert float(sae.threshold) == float(out.feats[out.feats > 0].min())  # first value taken as is


def test_inference_uses_global_threshold_and_saves_as_jumprelu(tmp_path):
    sae, x = _sae(), _x()
    with torch.no_grad():
        sae.threshold.fill_(2.5)
    sae.eval()
    pre = ((x - sae.b_dec) @ sae.W_enc + sae.b_enc).detach()
    torch.testing.assert_close(sae.encode(x).detach(), torch.relu(pre) * (pre > 2.5).double())
    save_sae(sae.float(), tmp_path / "b")
    own = load_sae(tmp_path / "b")  # alignlab metadata -> BatchTopK again, bit-exact
    assert type(own).__name__ == "BatchTopKSAE" and torch.equal(own(x.float()), sae(x.float()))
    cfg_path = tmp_path / "b" / "cfg.json"
    raw = json.loads(cfg_path.read_text())
    assert raw["architecture"] == "jumprelu"
    del raw["metadata"]["alignlab"]  # read it as a plain SAELens jumprelu
    cfg_path.write_text(json.dumps(raw))
    jr = load_sae(tmp_path / "b")
    assert type(jr).__name__ == "JumpReLUSAE"
    torch.testing.assert_close(jr(x.float()), sae(x.float()), rtol=1e-6, atol=1e-6)


def test_matryoshka_loss_is_sum_over_prefixes():
    sae, x = _sae("matryoshka", matryoshka_widths=(4, 12, N)), _x(2)
    out = sae.loss(x, TrainState(dead_mask=torch.zeros(N, dtype=torch.bool)))
    z = out.feats.detach()
    W, b = sae.W_dec.detach(), sae.b_dec.detach()
    expect = sum(((x - (z[:, :m] @ W[:m] + b)) ** 2).sum(-1).mean() for m in (4, 12, N))
    torch.testing.assert_close(out.terms["mse"].detach(), expect, rtol=1e-12, atol=0)
    torch.testing.assert_close(out.total.detach(), expect, rtol=1e-12, atol=0)
    torch.testing.assert_close(out.x_hat.detach(), z @ W + b)


def test_fast_selection_equals_flat_topk_and_falls_back():
    from alignlab.sae.batchtopk import batch_topk_select

    g = torch.Generator().manual_seed(3)
    pre = torch.randn(16, 200, generator=g, dtype=torch.float64)
    for p in (pre, pre.clone().index_fill_(0, torch.tensor([2]), 50.0)):  # row 2 dominates -> fallback path
        idx, vals = batch_topk_select(p, 3)
        ref_vals, ref_idx = torch.relu(p).flatten().topk(48)
        assert set(idx.tolist()) == set(ref_idx.tolist())
        torch.testing.assert_close(vals.sort().values, ref_vals.sort().values, rtol=0, atol=0)
