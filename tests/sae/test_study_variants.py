"""The study's Gated-SAE ablations (issue 17 item 2): each trains, and each differs from gated only where it should."""

from __future__ import annotations

import torch

from alignlab.sae import build_sae, load_sae, preset_config, save_sae
from alignlab.sae import study_variants as sv
from alignlab.sae.buffer import TensorBatches
from alignlab.sae.trainer import TrainConfig, train_saes

D, N = 8, 24


def _data(rows: int = 512, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(rows, D, generator=g)) * torch.rand(rows, 1, generator=g)


def _train(saes, steps: int = 15, on_log=None, lr: float = 3e-3):
    cfg = TrainConfig(
        total_steps=steps, batch_size=32, lr=lr, lr_warmup_steps=1, device="cpu", log_every=1, resample=False
    )
    return train_saes(saes, TensorBatches(_data(), 32, steps), cfg, progress=False, on_log=on_log)


def _gated(arch: str = "gated"):
    return build_sae(
        preset_config("gated", D, N, architecture=arch, normalize_activations="none", l1_coefficient=0.05)
    )


def test_every_variant_trains_and_keeps_its_loss_finite():
    saes = [_gated(a) for a in ("gated_no_bmag", "gated_untied_mag", "gated_no_aux")]
    before = [{k: v.clone() for k, v in s.state_dict().items()} for s in saes]
    res = _train(saes)
    for sae, init, r in zip(saes, before, res):
        assert r.steps == 15 and torch.isfinite(torch.tensor(r.metrics["loss"]))
        assert any(not torch.equal(init[k], v) for k, v in sae.state_dict().items())


def test_no_bmag_keeps_b_mag_equal_to_b_gate_at_every_step():
    tied, plain = _gated("gated_no_bmag"), _gated()
    seen = []

    def check(rec):
        if rec["sae"] == 0:
            seen.append(torch.equal(tied.b_mag, tied.b_gate))

    _train([tied, plain], on_log=check)
    assert len(seen) == 15 and all(seen)
    assert tied.b_gate.abs().sum() > 0  # b_gate (= b_mag) did learn
    assert not torch.equal(plain.b_mag, plain.b_gate)  # the untied model separates them
    assert "b_mag" not in {n for n, p in tied.named_parameters() if p.requires_grad}


def test_no_bmag_forward_is_gated_with_b_mag_set_to_b_gate():
    tied = _gated("gated_no_bmag")
    _train([tied], steps=5)
    ref = _gated()
    ref.load_state_dict({**tied.state_dict(), "b_mag": tied.b_gate.detach().clone()})
    x = _data(64, seed=1)
    assert torch.allclose(tied.encode(x), ref.encode(x), atol=1e-6)


def test_untied_mag_has_its_own_w_mag_and_no_r_mag():
    sae = _gated("gated_untied_mag")
    assert "r_mag" not in dict(sae.named_parameters())
    assert torch.equal(sae.W_mag, sae.W_enc)  # tied at init only
    ref = _gated()
    ref.load_state_dict(
        {**{k: v for k, v in sae.state_dict().items() if k != "W_mag"}, "r_mag": torch.zeros(N)}
    )
    x = _data(64, seed=4)
    with torch.no_grad():  # at init it is the gated SAE with r_mag = 0
        assert torch.allclose(sae.encode(x), ref.encode(x), atol=1e-6)
    _train([sae])
    assert not torch.allclose(sae.W_mag, sae.W_enc)


def test_no_aux_drops_exactly_the_aux_term():
    sae, ref = _gated("gated_no_aux"), _gated()
    ref.load_state_dict(sae.state_dict())
    from alignlab.sae.base import TrainState

    x = _data(64)
    out, full = sae.loss(x, TrainState()), ref.loss(x, TrainState())
    assert "aux" not in out.terms and "aux" in full.terms
    assert torch.allclose(out.total, full.total - full.terms["aux"], atol=1e-6)


def test_rescale_shift_starts_at_the_baseline_and_learns_only_scale_and_shift():
    base = build_sae(
        preset_config("standard_bricken", D, N, normalize_activations="none", l1_coefficient=0.05)
    )
    _train([base], steps=10)
    rs = sv.RescaleShiftSAE.from_standard(base)
    x = _data(128, seed=2)
    with torch.no_grad():
        assert torch.allclose(rs(x), base(x), atol=1e-5)  # the same function before training
        gate = base.pre_acts(x) > 0
    assert {n for n, p in rs.named_parameters() if p.requires_grad} == {"log_scale", "shift"}
    before = {k: v.clone() for k, v in rs.state_dict().items()}
    _train([rs], steps=15)
    changed = {k for k, v in rs.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"log_scale", "shift"}  # encoder and decoder frozen
    with torch.no_grad():
        assert torch.equal(rs.pre_acts(x) > 0, gate)  # same latents can fire: L0 cannot rise
        assert not ((rs.encode(x) != 0) & ~gate).any()
        err = lambda m: float((m(x) - x).pow(2).sum())  # noqa: E731
        assert err(rs) < err(base)


def test_variant_folders_round_trip(tmp_path):
    for arch in ("gated_no_bmag", "gated_untied_mag", "gated_no_aux"):
        sae = _gated(arch)
        _train([sae], steps=3)
        save_sae(sae, tmp_path / arch)
        back = load_sae(tmp_path / arch)
        x = _data(32, seed=3)
        assert type(back) is type(sae)
        assert torch.allclose(back(x), sae(x), atol=1e-6)
