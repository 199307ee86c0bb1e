"""Config validation, registry, presets, shared kernels and forward == decode(encode) for every class."""

from __future__ import annotations

import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.sae import PRESETS, REGISTRY, SAEConfig, TrainState, build_sae, preset_config
from alignlab.sae.base import centered_linear, geometric_median, recon_error

EXTRA = {"topk": {"k": 4}, "batchtopk": {"k": 4}, "matryoshka": {"k": 4, "matryoshka_widths": (16, 64)}}


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_forward_equals_decode_of_encode(arch):
    sae = build_sae(SAEConfig(architecture=arch, d_in=16, d_sae=64, **EXTRA.get(arch, {}))).double().eval()
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn(p.shape, dtype=p.dtype) * 0.1)
    x = torch.randn(10, 16, dtype=torch.float64)
    f = sae.encode(x)
    assert f.shape == (10, 64)
    torch.testing.assert_close(sae(x), sae.decode(f), rtol=0, atol=0)
    out = sae.train().loss(x, TrainState())
    assert out.feats.shape == (10, 64) and out.x_hat.shape == (10, 16) and out.total.ndim == 0


def test_registry_names_and_unknown_architecture():
    assert {"standard", "gated", "lp", "topk", "batchtopk", "jumprelu", "matryoshka"} <= set(REGISTRY)
    with pytest.raises(AlignlabError, match="known architectures: batchtopk, gated") as e:
        SAEConfig(architecture="nope", d_in=4, d_sae=8)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"d_in": 0}, "widths must be positive"),
        ({"d_sae": -3}, "widths must be positive"),
        ({"k": 0}, "k=0"),
        ({"recon_reduction": "max"}, "recon_reduction"),
        ({"recon_normalizer": "x"}, "recon_normalizer"),
        ({"l1_coefficient": float("nan")}, "l1_coefficient"),
        ({"input_scale": 0.0}, "input_scale"),
    ],
)
def test_bad_config_is_one_line_error(kw, msg):
    base = {"architecture": "standard", "d_in": 4, "d_sae": 8}
    with pytest.raises(AlignlabError, match=msg) as e:
        SAEConfig(**{**base, **kw})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds(name):
    cfg = preset_config(name, 16, 64)
    sae = build_sae(cfg)
    assert sae.cfg.architecture == PRESETS[name]["sae"]["architecture"]
    assert SAEConfig.from_dict(cfg.to_dict()) == cfg
    from alignlab.sae import preset_train_overrides
    from alignlab.sae.trainer import TrainConfig

    TrainConfig(**preset_train_overrides(name))  # every preset's training settings are valid fields


def test_centered_linear_custom_backward_equals_autograd():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    b1 = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(5, 9, generator=g, dtype=torch.float64, requires_grad=True)
    c1 = torch.randn(9, generator=g, dtype=torch.float64, requires_grad=True)
    up = torch.randn(7, 9, generator=g, dtype=torch.float64)
    (centered_linear(x, b1, w1, c1) * up).sum().backward()
    b2, w2, c2 = (t.detach().clone().requires_grad_(True) for t in (b1, w1, c1))
    (((x - b2) @ w2 + c2) * up).sum().backward()
    for a, r in ((b1, b2), (w1, w2), (c1, c2)):
        torch.testing.assert_close(a.grad, r.grad, rtol=1e-12, atol=1e-12)


def test_recon_error_conventions():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]], dtype=torch.float64)
    xh = torch.zeros_like(x)
    cfg = SAEConfig(architecture="standard", d_in=2, d_sae=4)
    assert float(recon_error(x, xh, cfg)) == (5 + 45) / 2  # sum over d, mean over tokens
    assert float(recon_error(x, xh, cfg.replace(recon_reduction="mean"))) == 25 / 2
    assert float(recon_error(x, xh, cfg.replace(recon_normalizer="mean_sq_norm"))) == 1.0
    bv = (1 + 4 + 1 + 4) / 2  # sum ||x - xbar||^2 / B with xbar = (2, 4)
    assert float(recon_error(x, xh, cfg.replace(recon_normalizer="batch_var"))) == pytest.approx(25 / bv)


def test_geometric_median_beats_mean_on_outliers():
    x = torch.zeros(21, 3, dtype=torch.float64)
    x[:10, 0] = 1.0
    x[10:20, 0] = -1.0
    x[20] = torch.tensor([100.0, 100.0, 100.0])
    gm = geometric_median(x)
    cost = lambda y: (x - y).norm(dim=1).sum()  # noqa: E731
    assert float(cost(gm)) < float(cost(x.mean(0)))
    # the optimum is the point (1, 0, 0): the outlier tips the balance between the two clusters
    assert float(gm[0]) > 0.99 and float(gm[1:].abs().max()) < 1e-3


@pytest.mark.parametrize("arch", ["standard", "gated", "jumprelu", "topk"])
def test_callable_as_pure_function_of_a_parameter_dict(arch):
    from alignlab.sae.base import call_with_params

    sae = build_sae(SAEConfig(architecture=arch, d_in=16, d_sae=64, **EXTRA.get(arch, {}))).double()
    other = build_sae(SAEConfig(architecture=arch, d_in=16, d_sae=64, seed=7, **EXTRA.get(arch, {}))).double()
    params = {k: v.detach().clone().requires_grad_(True) for k, v in other.named_parameters()}
    x = torch.randn(5, 16, dtype=torch.float64)
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    f = call_with_params(sae, params, "encode", x)
    torch.testing.assert_close(f, other.encode(x), rtol=0, atol=0)
    torch.testing.assert_close(call_with_params(sae, params, "decode", f), other.decode(f), rtol=0, atol=0)
    out = call_with_params(sae, params, "loss", x, TrainState())
    out.total.backward()
    ref = other.loss(x, TrainState())
    ref.total.backward()
    torch.testing.assert_close(out.total, ref.total, rtol=0, atol=0)
    for k, p in other.named_parameters():
        torch.testing.assert_close(params[k].grad, p.grad, rtol=1e-12, atol=1e-12)
    assert all(torch.equal(v, sae.state_dict()[k]) for k, v in before.items())
