"""L_p penalty (spec §2.3): lp vs lp_norm semantics, sqrt penalty, safe gradients, p-annealing lambda rule."""

from __future__ import annotations

import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.sae import SAEConfig, TrainState, build_sae
from alignlab.sae.lp import lp_penalty
from alignlab.sae.schedules import PAnnealer


def _f(seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.relu(torch.randn(5, 12, generator=g, dtype=torch.float64))
    return f


def test_lp_and_lp_norm_are_different_objectives():
    f = _f()
    w = torch.rand(12, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) + 0.5
    cfg = SAEConfig(architecture="lp", d_in=4, d_sae=12, p=0.5, recipe="anneal")
    lp = lp_penalty(f, 0.5, cfg, w)
    expect_lp = sum((w * f[b].pow(0.5)).sum() for b in range(5)) / 5  # sum_i w_i f_i^p
    torch.testing.assert_close(lp, expect_lp, rtol=1e-12, atol=0)
    cfg_n = cfg.replace(penalty="lp_norm")
    lpn = lp_penalty(f, 0.5, cfg_n, w)
    expect_n = sum(((w * f[b]).abs().pow(0.5).sum()) ** 2 for b in range(5)) / 5  # (sum |w_i f_i|^p)^(1/p)
    torch.testing.assert_close(lpn, expect_n, rtol=1e-12, atol=0)
    assert abs(float(lp) - float(lpn)) > 1e-3


def test_sqrt_penalty_gradient_is_finite_at_zero():
    f = _f(1).requires_grad_(True)
    cfg = SAEConfig(architecture="lp", d_in=4, d_sae=12, p=0.5)
    lp_penalty(f, 0.5, cfg).backward()
    assert bool(torch.isfinite(f.grad).all())
    pos = f.detach() > 0
    torch.testing.assert_close(f.grad[pos], (0.5 * f.detach()[pos].pow(-0.5)) / 5, rtol=1e-12, atol=0)
    assert float(f.grad[~pos].abs().max()) == 0.0


def test_eps_smoothed_form():
    f = _f(2)
    cfg = SAEConfig(architecture="lp", d_in=4, d_sae=12, p=0.5, lp_eps=0.01)
    torch.testing.assert_close(
        lp_penalty(f, 0.5, cfg), ((f + 0.01).pow(0.5) - 0.01**0.5).sum(-1).mean(), rtol=1e-12, atol=0
    )


def test_lp_sae_loss_uses_state_p():
    sae = build_sae(SAEConfig(architecture="lp", d_in=6, d_sae=12, l1_coefficient=0.3)).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    out = sae.loss(x, TrainState(l1_coefficient=0.3, p=0.5))
    f = out.feats.detach()
    torch.testing.assert_close(out.terms["sparsity"].detach(), f.pow(0.5).sum(-1).mean(), rtol=1e-12, atol=0)
    torch.testing.assert_close(out.total.detach(), out.terms["mse"].detach() + 0.3 * out.terms["sparsity"].detach())


def test_fixed_p_below_one_needs_allow_fixed_p():
    with pytest.raises(AlignlabError, match="allow_fixed_p"):
        SAEConfig(architecture="lp", d_in=4, d_sae=8, p=0.5, recipe="fixed")
    with pytest.warns(UserWarning, match="fixed p"):
        SAEConfig(architecture="lp", d_in=4, d_sae=8, p=0.5, recipe="fixed", allow_fixed_p=True)


def test_p_schedule_and_lambda_rescale_follow_the_formula():
    ann = PAnnealer(p_start=1.0, p_end=0.2, anneal_start=10, total_steps=50, n_updates=4, q=3, lam=0.5)
    assert ann.update_steps() == [10, 20, 30, 40]
    assert ann.p_at(9) == 1.0 and ann.p_at(10) == pytest.approx(0.8) and ann.p_at(49) == pytest.approx(0.2)
    batches = [_f(s) for s in range(5)]
    for step, f in zip(range(5, 10), batches):
        ann.record(step, f)
    last_q = batches[-3:]
    old = sum(float(f[f > 0].pow(1.0).sum()) for f in last_q)
    new = sum(float(f[f > 0].pow(0.8).sum()) for f in last_q)
    ann.before_step(10)
    assert ann.lam == pytest.approx(0.5 * old / new, rel=1e-12)  # lambda_{s+1} = lambda_s sum f^p_s / sum f^p_{s+1}
    before = ann.lam
    ann.before_step(11)  # not an update step: unchanged
    assert ann.lam == before
    restored = PAnnealer(1.0, 0.2, 10, 50, 4, 3, lam=0.0)
    restored.load_state_dict(ann.state_dict())
    assert restored.lam == ann.lam and list(restored.history) == list(ann.history)
