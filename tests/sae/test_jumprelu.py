"""JumpReLU (arXiv 2407.14435, spec §2.6): forward, L0 loss and the straight-through pseudo-derivatives."""

from __future__ import annotations

import math

import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.sae import SAEConfig, TrainState, build_sae
from alignlab.sae.jumprelu import JumpReLUFn, JumpReLUL0Fn, StepFn

EPS = 0.5


def _K(u):
    return ((u > -0.5) & (u < 0.5)).double()


def test_pseudo_derivatives_equal_paper_formulas():
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(40, 6, generator=g, dtype=torch.float64)).requires_grad_(True)
    theta = (torch.rand(6, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    up = torch.randn(40, 6, generator=g, dtype=torch.float64)
    (JumpReLUFn.apply(z, theta, EPS) * up).sum().backward()
    zd, td = z.detach(), theta.detach()
    kern = _K((zd - td) / EPS)
    torch.testing.assert_close(z.grad, up * (zd > td).double(), rtol=0, atol=0)  # df/dz = H(z - theta)
    torch.testing.assert_close(theta.grad, (up * -(td / EPS) * kern).sum(0), rtol=1e-12, atol=1e-12)
    assert float(kern.sum()) > 0  # the kernel window was actually hit
    z.grad = None
    theta.grad = None
    (StepFn.apply(z, theta, EPS) * up).sum().backward()
    assert float(z.grad.abs().max()) == 0.0  # the L0 term passes no gradient to z
    torch.testing.assert_close(theta.grad, (up * -(1 / EPS) * kern).sum(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("param", ["linear", "log"])
def test_forward_and_loss_match_transcription(param):
    cfg = SAEConfig(architecture="jumprelu", d_in=6, d_sae=20, l1_coefficient=0.05, bandwidth=0.3, threshold_init=0.2,
                    threshold_param=param)
    sae = build_sae(cfg).double()
    x = torch.randn(9, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = sae.loss(x, TrainState(l1_coefficient=0.05))
    z = x @ sae.W_enc.detach() + sae.b_enc.detach()  # no b_dec on the input (paper form)
    theta = sae.theta.detach()
    assert torch.allclose(theta, torch.full_like(theta, 0.2), rtol=1e-7, atol=0)  # theta0 (an fp32 init)
    f = z * (z > theta).double()
    torch.testing.assert_close(out.feats.detach(), f, rtol=1e-12, atol=1e-12)
    x_hat = f @ sae.W_dec.detach() + sae.b_dec.detach()
    torch.testing.assert_close(out.terms["mse"].detach(), ((x - x_hat) ** 2).sum(-1).mean(), rtol=1e-12, atol=0)
    torch.testing.assert_close(out.terms["sparsity"].detach(), (z > theta).double().sum(-1).mean(), rtol=0, atol=0)
    torch.testing.assert_close(sae(x), sae.decode(sae.encode(x)), rtol=0, atol=0)
    sae.zero_grad()
    out.total.backward()
    kern = _K((z - theta) / 0.3)
    assert float(kern.sum()) > 0  # some pre-activations fall inside the kernel window
    g_f = 2 * (x_hat - x) @ sae.W_dec.detach().T / x.shape[0]  # dMSE/df
    g_theta = (g_f * -(theta / 0.3) * kern).sum(0) + 0.05 * (-(1 / 0.3) * kern).sum(0) / x.shape[0]
    if param == "linear":  # Adam trains theta itself (SAELens, dictionary_learning)
        assert {n for n, _ in sae.named_parameters()} == {"W_enc", "W_dec", "b_dec", "b_enc", "threshold"}
        torch.testing.assert_close(sae.threshold.grad, g_theta, rtol=1e-10, atol=1e-12)
    else:  # the paper's pseudo-code trains log theta: the chain rule through exp
        torch.testing.assert_close(sae.log_threshold.grad, g_theta * theta, rtol=1e-10, atol=1e-12)


def test_presets():
    p = SAEConfig(architecture="jumprelu", d_in=4, d_sae=8)
    s = SAEConfig(architecture="jumprelu", d_in=4, d_sae=8, recipe="saelens")
    assert (p.bandwidth, p.threshold_init) == (0.001, 0.001) and (s.bandwidth, s.threshold_init) == (0.05, 0.01)
    assert p.threshold_param == s.threshold_param == "linear"
    sae = build_sae(p)
    assert math.isclose(float(sae.theta[0].detach()), 0.001, rel_tol=1e-6)
    with pytest.raises(AlignlabError, match="threshold_param"):
        SAEConfig(architecture="jumprelu", d_in=4, d_sae=8, threshold_param="exp")


def test_linear_threshold_is_projected_to_non_negative_and_still_learns_at_zero():
    """Below 0 the gate would pass negative pre-activations; the projection after each step keeps theta >= 0
    without cutting its gradient, so a threshold at 0 moves up again under the L0 term."""
    sae = build_sae(SAEConfig(architecture="jumprelu", d_in=6, d_sae=10, bandwidth=0.5, l1_coefficient=1.0))
    with torch.no_grad():
        sae.threshold[:4] = -0.3
    sae.after_step()
    theta = sae.threshold.detach()
    assert float(theta[:4].abs().max()) == 0.0 and bool((theta[4:] == 0.001).all())
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1)) * 0.2
    sae.loss(x, TrainState(l1_coefficient=1.0)).total.backward()
    assert bool((sae.threshold.grad[:4] < 0).all())  # descent raises theta: the L0 term dominates at theta = 0


def test_tanh_recipe_terms():
    cfg = SAEConfig(architecture="jumprelu", d_in=6, d_sae=12, recipe="tanh", l1_coefficient=0.1)
    sae = build_sae(cfg).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    dead = torch.zeros(12, dtype=torch.bool)
    dead[:4] = True
    out = sae.loss(x, TrainState(dead_mask=dead))
    norms = sae.W_dec.detach().norm(dim=1)
    f = out.feats.detach()
    torch.testing.assert_close(out.terms["sparsity"].detach(), torch.tanh(4 * f * norms).sum(-1).mean())
    z = x @ sae.W_enc.detach() + sae.b_enc.detach()
    pre = (torch.relu(sae.theta.detach() - z) * norms * dead.double()).sum(-1).mean()
    torch.testing.assert_close(out.terms["pre_act"].detach(), pre)


def test_fused_l0_function_equals_the_two_reference_functions():
    g = torch.Generator().manual_seed(5)
    z1 = torch.randn(30, 7, generator=g, dtype=torch.float64).requires_grad_(True)
    t1 = (torch.rand(7, generator=g, dtype=torch.float64) * 0.5 + 0.1).requires_grad_(True)
    up_f = torch.randn(30, 7, generator=g, dtype=torch.float64)
    up_l = torch.randn(30, generator=g, dtype=torch.float64)
    f, l0 = JumpReLUL0Fn.apply(z1, t1, EPS)
    ((f * up_f).sum() + (l0 * up_l).sum()).backward()
    z2, t2 = z1.detach().clone().requires_grad_(True), t1.detach().clone().requires_grad_(True)
    f2 = JumpReLUFn.apply(z2, t2, EPS)
    l02 = StepFn.apply(z2, t2, EPS).sum(-1)
    ((f2 * up_f).sum() + (l02 * up_l).sum()).backward()
    torch.testing.assert_close(f, f2, rtol=0, atol=0)
    torch.testing.assert_close(l0, l02, rtol=0, atol=0)
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(t1.grad, t2.grad, rtol=1e-12, atol=1e-12)
