"""Gated SAE parity with arXiv 2404.16014 (§3, App. G) written out naively, per token, in fp64."""

from __future__ import annotations

import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.sae import SAEConfig, TrainState, build_sae
from alignlab.sae.gated import gated_encode_reference

D, N = 8, 24


def _sae(seed=0, **kw):
    cfg = SAEConfig(architecture="gated", d_in=D, d_sae=N, l1_coefficient=0.21, **kw)
    sae = build_sae(cfg).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.4)
    return sae


def _x(seed=1, b=7):
    return torch.randn(b, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _naive(P, x, lam, freeze_aux=True):
    """L = ||x - x_hat(f~)||^2 + lam ||ReLU(pi_gate)||_1 + ||x - (sg(W_dec) ReLU(pi_gate) + sg(b_dec))||^2,
    with an explicit W_mag = diag(exp(r_mag)) W_gate (no shared GEMM)."""
    W_gate = P["W_enc"].T  # [n, d]
    W_mag = torch.diag(torch.exp(P["r_mag"])) @ W_gate
    W_dec = P["W_dec"].T  # [d, n]
    W_aux, b_aux = (W_dec.detach(), P["b_dec"].detach()) if freeze_aux else (W_dec, P["b_dec"])
    mse = pen = aux = 0.0
    fs, rgs = [], []
    for xi in x:
        xc = xi - P["b_dec"]
        pi_gate = W_gate @ xc + P["b_gate"]
        pi_mag = W_mag @ xc + P["b_mag"]
        f = (pi_gate > 0).double() * torch.relu(pi_mag)
        x_hat = W_dec @ f + P["b_dec"]
        mse = mse + ((xi - x_hat) ** 2).sum()
        pen = pen + torch.relu(pi_gate).sum()
        aux = aux + ((xi - (W_aux @ torch.relu(pi_gate) + b_aux)) ** 2).sum()
        fs.append(f)
        rgs.append(torch.relu(pi_gate))
    B = x.shape[0]
    return {"mse": mse / B, "sparsity": pen / B, "aux": aux / B}, torch.stack(fs), torch.stack(rgs)


def _leaf(sae):
    return {k: v.detach().clone().requires_grad_(True) for k, v in sae.named_parameters()}


def test_loss_terms_and_all_gradients_match_paper():
    sae, x = _sae(), _x()
    out = sae.loss(x, TrainState(l1_coefficient=0.21))
    out.total.backward()
    P = _leaf(sae)
    terms, f, rg = _naive(P, x, 0.21)
    (terms["mse"] + 0.21 * terms["sparsity"] + terms["aux"]).backward()
    torch.testing.assert_close(out.feats, f, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.penalty_acts, rg, rtol=1e-10, atol=1e-12)
    for k in ("mse", "sparsity", "aux"):
        torch.testing.assert_close(out.terms[k], terms[k], rtol=1e-10, atol=0)
    for name, p in sae.named_parameters():
        torch.testing.assert_close(p.grad, P[name].grad, rtol=1e-10, atol=1e-12, msg=name)


def test_fused_encoder_equals_eager_reference_and_forward_is_decode_encode():
    sae, x = _sae(3), _x(4)
    f_fused = sae.encode(x)
    f_ref, _ = gated_encode_reference(sae, x)
    torch.testing.assert_close(f_fused, f_ref, rtol=1e-13, atol=1e-13)  # addcmul may fuse the multiply-add
    torch.testing.assert_close(sae(x), sae.decode(sae.encode(x)), rtol=0, atol=0)


def _grads_of(sae, x, term):
    sae.zero_grad()
    out = sae.loss(x, TrainState(l1_coefficient=0.21))
    out.terms[term].backward()
    return {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for k, p in sae.named_parameters()}


def test_aux_term_sends_no_gradient_to_decoder_but_b_dec_in_x_c_learns():
    sae, x = _sae(5), _x(6)
    g_aux = _grads_of(sae, x, "aux")
    assert float(g_aux["W_dec"].abs().max()) == 0.0  # frozen decoder copy (App. G)
    assert float(g_aux["r_mag"].abs().max()) == 0.0 and float(g_aux["b_mag"].abs().max()) == 0.0
    assert float(g_aux["b_dec"].abs().max()) > 0.0  # ... but b_dec inside x_c gets gradient
    # and that b_dec gradient is exactly the encoder path: -(W_gate^T sum_b dL/dpi_gate)
    P = _leaf(sae)
    terms, _, _ = _naive(P, x, 0.21)
    terms["aux"].backward()
    torch.testing.assert_close(g_aux["b_dec"], P["b_dec"].grad, rtol=1e-10, atol=1e-12)


def test_b_gate_learns_only_from_sparsity_and_aux():
    sae, x = _sae(7), _x(8)
    assert float(_grads_of(sae, x, "mse")["b_gate"].abs().max()) == 0.0  # H passes no gradient
    assert float(_grads_of(sae, x, "sparsity")["b_gate"].abs().max()) > 0.0
    g_mse = _grads_of(sae, x, "mse")
    assert float(g_mse["W_enc"].abs().max()) > 0.0  # W_gate learns reconstruction through the tying


def test_fp32_path_matches_fp64_to_1e5():
    sae64, x = _sae(9), _x(10)
    sae32 = _sae(9).float()
    o64 = sae64.loss(x, TrainState())
    o32 = sae32.loss(x.float(), TrainState())
    for k in o64.terms:
        assert abs(float(o32.terms[k].detach()) - float(o64.terms[k].detach())) <= 1e-5 * max(1.0, abs(float(o64.terms[k].detach())))


def test_april_variant_unfrozen_aux_and_weighted_penalty():
    sae, x = _sae(11, recipe="april"), _x(12)
    assert sae.cfg.aux_mode == "unfrozen_aux" and sae.cfg.weight_by_decoder_norm
    out = sae.loss(x, TrainState(l1_coefficient=0.21))
    P = _leaf(sae)
    _, _, rg = _naive(P, x, 0.21)
    norms = P["W_dec"].norm(dim=1)
    torch.testing.assert_close(out.terms["sparsity"], (rg * norms).sum(-1).mean(), rtol=1e-10, atol=0)
    g_aux = _grads_of(sae, x, "aux")
    assert float(g_aux["W_dec"].abs().max()) > 0.0  # SAELens-style: decoder unfrozen in the aux term


def test_frozen_in_one_place_only_is_rejected():
    with pytest.raises(AlignlabError, match="unfrozen_aux"):
        SAEConfig(architecture="gated", d_in=D, d_sae=N, weight_by_decoder_norm=True, aux_mode="frozen")
    with pytest.raises(AlignlabError, match="aux_mode must be"):
        SAEConfig(architecture="gated", d_in=D, d_sae=N, aux_mode="half")


def test_jumprelu_export_reproduces_gated_including_negative_theta():
    sae, x = _sae(13), _x(14, b=64)
    with torch.no_grad():
        sae.b_gate[: N // 2] = 2.0  # theta = b_mag - exp(r) b_gate < 0 for many latents
    t = sae.jumprelu_tensors()
    theta = sae.b_mag - sae.r_mag.exp() * sae.b_gate
    assert bool((theta < 0).any()) and bool((theta > 0).any())
    z = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    f_jump = z * (z > t["threshold"]).double()
    torch.testing.assert_close(f_jump, sae.encode(x), rtol=1e-12, atol=1e-12)


def _perturbed_twins(cfg):
    """Two SAEs with the same non-trivial (perturbed) parameters."""
    torch.manual_seed(0)
    a = build_sae(cfg)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    b = build_sae(cfg)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("arch", ["gated", "standard"])
def test_fused_kernels_under_bf16_autocast_match_the_eager_autocast_path(arch):
    fused, eager = _perturbed_twins(SAEConfig(architecture=arch, d_in=32, d_sae=128, l1_coefficient=0.01))
    x = torch.randn(64, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_f = fused.loss(x, TrainState())
        out_e = eager.loss(x.clone().requires_grad_(True), TrainState())  # x.requires_grad -> eager autograd
    out_f.total.backward()
    out_e.total.backward()
    for k in out_f.terms:
        torch.testing.assert_close(out_f.terms[k].detach(), out_e.terms[k].detach(), rtol=2e-2, atol=1e-3)
    for (name, pf), pe in zip(fused.named_parameters(), eager.parameters()):
        assert pf.grad.dtype == torch.float32
        err = float((pf.grad - pe.grad).norm() / pe.grad.norm().clamp_min(1e-12))
        assert err < 3e-2, (name, err)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_elementwise_kernels_equal_the_eager_ones(dtype):
    from alignlab.sae.gated import _gate_backward, _gate_forward

    # aot_eager: dynamo tracing + functionalisation of the in-place ops, as Inductor sees them, without codegen
    fwd_c = torch.compile(_gate_forward, dynamic=False, fullgraph=True, backend="aot_eager")
    bwd_c = torch.compile(_gate_backward, dynamic=False, fullgraph=True, backend="aot_eager")
    g = torch.Generator().manual_seed(0)
    u, gf, grg = (torch.randn(64, 96, generator=g).to(dtype) for _ in range(3))
    b_gate, b_mag = (torch.randn(96, generator=g).to(dtype) for _ in range(2))
    scale = torch.rand(96, generator=g).add(0.5).to(dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=5e-2)
    f1, rg1 = _gate_forward(u, b_gate, scale, b_mag)
    f2, rg2 = fwd_c(u, b_gate, scale, b_mag)
    assert torch.equal(rg1, rg2)
    same = (f1 > 0) == (f2 > 0)
    assert float(same.float().mean()) >= (1.0 if dtype == torch.float32 else 0.99)
    torch.testing.assert_close(f1[same], f2[same], **tol)
    assert bool((f1 == 0).any()) and bool((f1 > 0).any())
    out1 = _gate_backward(gf.clone(), grg.clone(), f1, rg1, u, scale, True)
    out2 = bwd_c(gf, grg, f1, rg1, u, scale, True)
    for a, b in zip(out1, out2):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol)


def test_compiled_kernel_path_traces_in_one_graph_and_gives_the_same_gradients():
    from alignlab.sae import gated

    a, b = _perturbed_twins(SAEConfig(architecture="gated", d_in=16, d_sae=48, l1_coefficient=0.01))
    x = torch.randn(32, 16)
    a.loss(x, TrainState()).total.backward()
    try:
        assert gated.compile_gated_kernels("cpu", backend="eager")  # dynamo tracing, fullgraph, no codegen
        b.loss(x, TrainState()).total.backward()
    finally:
        gated.reset_gated_kernels()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-5, atol=1e-6, msg=name)
