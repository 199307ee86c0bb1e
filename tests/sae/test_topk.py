"""TopK + AuxK (Gao et al. 2024, spec §2.4): selection, loss parity and AuxK touching dead latents only."""

from __future__ import annotations

import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.sae import SAEConfig, TrainState, build_sae

D, N, K = 8, 32, 3


def _sae(seed=0, **kw):
    sae = build_sae(SAEConfig(architecture="topk", d_in=D, d_sae=N, k=K, **kw)).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.4)
    return sae


def _x(seed=1, b=6):
    return torch.randn(b, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _naive_codes(P, x, k):
    We = P["W_enc"].T
    out = []
    for xi in x:
        pre = We @ (xi - P["b_dec"]) + P["b_enc"]
        order = sorted(range(len(pre)), key=lambda i: -float(pre[i].detach()))[:k]
        z = torch.zeros_like(pre)
        for i in order:
            z[i] = torch.relu(pre[i])  # ReLU after TopK
        out.append(z)
    return torch.stack(out)


def test_keeps_exactly_k_and_matches_transcription():
    sae, x = _sae(), _x()
    with torch.no_grad():
        sae.b_enc.add_(5.0)  # all pre-activations positive -> exactly k nonzeros per token
    z = sae.encode(x)
    assert ((z > 0).sum(-1) == K).all()
    P = {k: v.detach() for k, v in sae.named_parameters()}
    torch.testing.assert_close(z, _naive_codes(P, x, K), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sae(x), sae.decode(z), rtol=1e-12, atol=1e-12)


def test_loss_and_gradients_match_transcription_without_dead():
    sae, x = _sae(2), _x(3)
    out = sae.loss(x, TrainState(dead_mask=torch.zeros(N, dtype=torch.bool)))
    assert set(out.terms) == {"mse"}  # no L1, no AuxK when nothing is dead
    out.total.backward()
    P = {k: v.detach().clone().requires_grad_(True) for k, v in sae.named_parameters()}
    z = _naive_codes(P, x, K)
    x_hat = z @ P["W_dec"] + P["b_dec"]
    ((x - x_hat) ** 2).sum(-1).mean().backward()
    for name, p in sae.named_parameters():
        torch.testing.assert_close(p.grad, P[name].grad, rtol=1e-10, atol=1e-12, msg=name)


def test_auxk_uses_only_dead_latents_and_its_scale():
    sae, x = _sae(4, aux_k=4), _x(5)
    dead = torch.zeros(N, dtype=torch.bool)
    dead[[1, 5, 9]] = True  # 3 dead < k_aux = 4 -> scale 3/4
    out = sae.loss(x, TrainState(dead_mask=dead))
    sae.zero_grad()
    out.terms["auxk"].backward()
    g = sae.W_dec.grad
    assert float(g[~dead].abs().max()) == 0.0 and float(g[dead].abs().max()) > 0.0
    # transcription: e = sg(x - x_hat), z_aux = top-k_aux pre-activations among dead, L = ||e - W_dec z_aux||^2
    with torch.no_grad():
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        e = x - out.x_hat
        z_aux = torch.zeros_like(pre)
        z_aux[:, dead] = torch.relu(pre[:, dead])  # all 3 dead latents are within the top 4
        expect = ((e - z_aux @ sae.W_dec) ** 2).sum(-1).mean() * (3 / 4)
    torch.testing.assert_close(out.terms["auxk"].detach(), expect, rtol=1e-10, atol=0)
    torch.testing.assert_close(out.total.detach(), (out.terms["mse"] + out.terms["auxk"] / 32).detach())


def test_defaults_and_validation():
    cfg = SAEConfig(architecture="topk", d_in=D, d_sae=N, k=K)
    assert cfg.aux_k == D // 2 and cfg.aux_k_coefficient == 1 / 32 and cfg.unit_norm_decoder
    assert cfg.b_dec_init == "geometric_median"
    with pytest.raises(AlignlabError, match="needs k"):
        SAEConfig(architecture="topk", d_in=D, d_sae=N)
    with pytest.raises(AlignlabError, match="k=99"):
        SAEConfig(architecture="topk", d_in=D, d_sae=N, k=99)
