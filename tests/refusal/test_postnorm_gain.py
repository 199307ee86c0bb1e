"""The approximate post-norm edit with near-zero gains: Γ⁺ instead of Γ⁻¹ (measured on Gemma-3-270M, whose
post-sublayer norms have gain coordinates within 1e-3 of 0)."""

import torch

from alignlab.refusal.edit import GAIN_RTOL, inverse_gain, postnorm_columns


def test_inverse_gain_inverts_only_the_well_conditioned_coordinates():
    gamma = torch.tensor([2.0, -0.5, 1e-6, 0.0, 4.0], dtype=torch.float64)
    assert torch.equal(inverse_gain(gamma), torch.tensor([0.5, -2.0, 0.0, 0.0, 0.25], dtype=torch.float64))
    edge = torch.tensor([1.0, GAIN_RTOL], dtype=torch.float64)  # exactly at the threshold: inverted
    assert torch.equal(inverse_gain(edge), 1.0 / edge)


def test_postnorm_columns_leaves_only_the_weight_on_near_zero_gains():
    g = torch.Generator().manual_seed(0)
    d, n = 16, 7
    W = torch.randn(d, n, generator=g, dtype=torch.float64)
    r = torch.randn(d, generator=g, dtype=torch.float64)
    r /= r.norm()
    gamma = torch.rand(d, generator=g, dtype=torch.float64) + 0.5
    full = postnorm_columns(W, r, gamma)
    assert (r @ (gamma[:, None] * full)).abs().max() < 1e-12  # all gains invertible: exactly r-free after Γ
    gamma[[3, 9]] = 1e-7  # two coordinates the norm (nearly) zeroes
    out = postnorm_columns(W, r, gamma)
    assert torch.isfinite(out).all() and (out - W).abs().max() < 10 * (W.abs().max())  # no 1/γ blow-up
    assert torch.equal(out[[3, 9]], W[[3, 9]])  # those rows are left as they were
    left = r @ (gamma[:, None] * out)
    before = r @ (gamma[:, None] * W)
    torch.testing.assert_close(left, (r[3] ** 2 + r[9] ** 2) * before, rtol=1e-9, atol=1e-12)
