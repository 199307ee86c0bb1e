"""Trainer: exact resume, multi-SAE == separate runs, DDP == single process, guards, constraints, resampling."""

from __future__ import annotations

import os

import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.sae import SAEConfig, TrainState, build_sae
from alignlab.sae.optim import make_adam, project_decoder_grads_, resample_dead_
from alignlab.sae.schedules import lr_factor, resample_lr_factor
from alignlab.sae.trainer import TrainConfig, train_saes

D, N, B = 16, 64, 32


def _data(n_batches, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(D, D, generator=g)
    return [torch.randn(B, D, generator=g) @ mix + 0.5 for _ in range(n_batches)]


def _zoo():
    gated = build_sae(SAEConfig(architecture="gated", d_in=D, d_sae=N, l1_coefficient=0.01, seed=1))
    with torch.no_grad():
        gated.b_gate[:8] = -100.0  # 8 latents that never fire -> resampled at step 9
    return [
        gated,
        build_sae(SAEConfig(architecture="lp", d_in=D, d_sae=N, anneal_start=4, n_sparsity_updates=3, anneal_q=2)),
        build_sae(SAEConfig(architecture="batchtopk", d_in=D, d_sae=N, k=4, seed=2)),
        build_sae(SAEConfig(architecture="standard", d_in=D, d_sae=N, recipe="april2024", seed=3)),
        build_sae(SAEConfig(architecture="topk", d_in=D, d_sae=N, k=4, seed=4)),
    ]


def _cfg(**kw):
    base = dict(total_steps=12, batch_size=B, lr=1e-3, lr_warmup_steps=3, l1_warmup_steps=8, log_every=2,
                checkpoint_every=6, resample_steps=(9,), dead_window=B * 3, norm_estimate_batches=2, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _strip(logs):
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in logs]


def test_resume_is_bit_identical_to_uninterrupted(tmp_path):
    data = _data(14)
    logs_a: list[dict] = []
    res_a = train_saes(_zoo(), iter(data), _cfg(), out_dir=tmp_path / "a", progress=False, on_log=logs_a.append)
    logs_b: list[dict] = []
    first = train_saes(_zoo(), iter(data[:8]), _cfg(), out_dir=tmp_path / "b", progress=False, on_log=logs_b.append)
    assert first[0].steps == 6  # the stream ended: "killed" after 6 of 12 steps (2 batches went to scaling)
    res_b = train_saes(_zoo(), iter(data), _cfg(), out_dir=tmp_path / "b", resume=True, progress=False,
                       on_log=logs_b.append)
    assert any(r["resampled"] > 0 for r in logs_a if r["sae"] == 0)  # the scenario covers resampling
    assert any(r["p"] < 1.0 for r in logs_a if r["sae"] == 1)  # ... p-annealing past the interruption
    for ra, rb in zip(res_a, res_b):
        assert ra.steps == rb.steps == 12
        for k, v in ra.sae.state_dict().items():
            assert torch.equal(v, rb.sae.state_dict()[k]), (ra.sae.cfg.architecture, k)
    assert _strip(logs_a) == _strip(logs_b)
    from alignlab.sae.checkpoint import latest_checkpoint, load_checkpoint

    st_a = load_checkpoint(latest_checkpoint(tmp_path / "a"))
    st_b = load_checkpoint(latest_checkpoint(tmp_path / "b"))
    assert st_a["step"] == st_b["step"] == 12 and st_a["batches_consumed"] == st_b["batches_consumed"]
    for sa, sb in zip(st_a["slots"], st_b["slots"]):  # optimiser state, counters, annealer, generator
        for (pa, a), (_pb, b) in zip(sa["opt"]["state"].items(), sb["opt"]["state"].items()):
            assert all(torch.equal(a[k], b[k]) for k in a), pa
        for key in ("since_fired", "fired_since_resample", "window_fires", "gen"):
            assert torch.equal(sa[key], sb[key]), key
        assert sa["annealer"] == sb["annealer"]
    lines_a = [ln for ln in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    lines_b = [ln for ln in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert len(lines_a) == len(lines_b)


def test_several_saes_equal_separate_runs():
    data = _data(6)
    cfg = _cfg(total_steps=6, checkpoint_every=0)
    together = train_saes(_zoo()[:3], iter(data), cfg, progress=False)
    for i in range(3):
        alone = train_saes([_zoo()[i]], iter(data), cfg, progress=False)[0]
        for k, v in together[i].sae.state_dict().items():
            assert torch.equal(v, alone.sae.state_dict()[k]), (i, k)


def test_nan_batch_names_the_step():
    data = _data(5)
    data[3][2, 5] = float("nan")
    sae = build_sae(SAEConfig(architecture="standard", d_in=D, d_sae=N))
    with pytest.raises(AlignlabError, match="batch at step 3 contains NaN/inf") as e:
        train_saes([sae], iter(data), _cfg(total_steps=5), progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(AlignlabError, match="width 16 but the SAEs expect d_in=8"):
        train_saes([build_sae(SAEConfig(architecture="standard", d_in=8, d_sae=N))], iter(data), _cfg(), progress=False)


def test_unit_norm_after_every_step_and_projected_gradient_is_orthogonal():
    sae = build_sae(SAEConfig(architecture="standard", d_in=D, d_sae=N, l1_coefficient=0.1))
    worst = []
    train_saes([sae], iter(_data(8)), _cfg(total_steps=8, log_every=1, lr=1e-2, checkpoint_every=0),
               progress=False, on_log=lambda r: worst.append(float((sae.W_dec.detach().norm(dim=1) - 1).abs().max())))
    assert len(worst) == 8 and max(worst) <= 1e-6
    w = sae.W_dec
    w.grad = torch.randn_like(w)
    project_decoder_grads_(sae)
    assert float((w.grad * w.detach()).sum(1).abs().max()) < 1e-5


def test_folded_result_on_raw_x_equals_trained_sae_on_scaled_x():
    sae = build_sae(SAEConfig(architecture="standard", d_in=D, d_sae=N, recipe="april2024"))
    res = train_saes([sae], iter(_data(8)), _cfg(total_steps=4, checkpoint_every=0), progress=False)[0]
    s = sae.cfg.input_scale
    assert s != 1.0 and res.sae.cfg.input_scale == 1.0
    x = _data(1, seed=9)[0]
    torch.testing.assert_close(res.sae(x), sae(x * s) / s, rtol=1e-5, atol=1e-5)


def test_resampling_follows_bricken():
    sae = build_sae(SAEConfig(architecture="standard", d_in=D, d_sae=N))
    opt = make_adam(sae, 1e-3, (0.0, 0.999), 1e-8)
    x = _data(1)[0]
    sae.loss(x, TrainState()).total.backward()
    opt.step()
    dead = torch.zeros(N, dtype=torch.bool)
    dead[[3, 7, 11]] = True
    alive_norm = float(sae.W_enc.detach().norm(dim=0)[~dead].mean())
    with torch.no_grad():
        x_hat = sae(x)
    n = resample_dead_(sae, opt, dead, x, x_hat, torch.Generator().manual_seed(0))
    assert n == 3
    rows = sae.W_dec[dead].detach()
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(3))
    xn = x / x.norm(dim=1, keepdim=True)
    assert all(bool(((xn - r).abs().max(dim=1).values < 1e-6).any()) for r in rows)  # each is a drawn input
    torch.testing.assert_close(sae.W_enc.detach()[:, dead].norm(dim=0), torch.full((3,), 0.2 * alive_norm))
    assert float(sae.b_enc.detach()[dead].abs().max()) == 0.0
    for p, dim in ((sae.W_dec, 0), (sae.W_enc, 1), (sae.b_enc, 0)):
        st = opt.state[p]
        assert float(st["exp_avg_sq"].index_select(dim, dead.nonzero().flatten()).abs().max()) == 0.0
        assert float(st["exp_avg_sq"].abs().max()) > 0.0


def test_schedules():
    assert lr_factor(0, 100, 10, 0, "constant", 0.0) == pytest.approx(0.1)
    assert lr_factor(50, 100, 10, 20, "linear_decay_tail", 0.0) == 1.0
    assert lr_factor(90, 100, 10, 20, "linear_decay_tail", 0.0) == pytest.approx(0.5)
    assert resample_lr_factor(100, (100,)) == pytest.approx(0.1)
    assert resample_lr_factor(600, (100,)) == pytest.approx(0.55)  # half-way up the cosine ramp
    assert resample_lr_factor(1100, (100,)) == 1.0
    with pytest.raises(AlignlabError, match="lr_schedule"):
        TrainConfig(lr_schedule="weird")


DDP_SAES = [
    ["standard", {}], ["standard", {"recipe": "april2024"}], ["gated", {}], ["gated", {"recipe": "april"}],
    ["lp", {"anneal_start": 1, "n_sparsity_updates": 2, "anneal_q": 1}], ["topk", {"k": 4}], ["batchtopk", {"k": 4}],
    ["matryoshka", {"k": 4, "matryoshka_widths": [16, 32, 64]}], ["jumprelu", {"bandwidth": 0.5, "threshold_init": 0.1}],
]


def test_two_process_ddp_matches_single_process(tmp_path):
    """Two gloo ranks, each on a contiguous half of every batch, end with identical weights that equal one
    process on the whole batch, for every architecture (issue 14 item 1): input scale, b_dec init, resampling,
    p-annealing, BatchTopK selection and theta all see the global batch."""
    import dataclasses
    import json
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    sys.path.insert(0, str(Path(__file__).parent))
    from ddp_run import make_saes

    data = _data(8)
    cfg = _cfg(total_steps=6, checkpoint_every=0, resample_steps=(3,), l1_warmup_steps=2, lr_warmup_steps=2,
               dead_window=B * 2)
    torch.save(data, tmp_path / "data.pt")
    (tmp_path / "spec.json").write_text(json.dumps({"train": dataclasses.asdict(cfg), "saes": DDP_SAES}))
    script = Path(__file__).with_name("ddp_run.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "data.pt"), str(tmp_path / "spec.json"),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    res = train_saes(make_saes(DDP_SAES, D, N), iter(data), cfg, progress=False)
    for i in (0, 2):  # bricken and gated resampled their 8 never-firing latents (encoder bias reset to 0)
        bias = res[i].sae.b_enc if i == 0 else res[i].sae.b_gate
        assert bool((bias[:8] > -50).all())
    for i, r in enumerate(res):
        for k, v in r.sae.state_dict().items():
            key = f"{i}.{k}"
            assert torch.equal(ranks[0][key], ranks[1][key]), (DDP_SAES[i], k, "ranks differ")
            torch.testing.assert_close(ranks[0][key], v, rtol=1e-6, atol=1e-6, msg=f"{DDP_SAES[i]} {k}")


def test_deferred_nan_check_raises_at_the_next_log_step_naming_the_first_bad_step(tmp_path, monkeypatch):
    import alignlab.sae.slot as slot_mod
    from alignlab.sae.finite import FiniteGuard

    class Deferred(FiniteGuard):  # what a GPU run does: no sync per step
        def __init__(self, device, message):
            super().__init__(device, message, deferred=True)

    monkeypatch.setattr(slot_mod, "FiniteGuard", Deferred)
    sae = build_sae(SAEConfig(architecture="standard", d_in=D, d_sae=N))
    real_loss, calls = sae.loss, []

    def loss(x, state):
        out = real_loss(x, state)
        calls.append(state.step)
        if state.step >= 2:
            out = type(out)(out.total * float("nan"), out.terms, out.feats, out.x_hat, out.penalty_acts)
        return out

    monkeypatch.setattr(sae, "loss", loss)
    cfg = _cfg(total_steps=10, log_every=5, checkpoint_every=0, resample_steps=())
    with pytest.raises(AlignlabError, match="SAE 0 loss became non-finite at step 2"):
        train_saes([sae], iter(_data(12)), cfg, out_dir=tmp_path / "run", progress=False)
    assert max(calls) == 4  # raised at the first log step after the failure, not at once
    assert not (tmp_path / "run" / "sae_0").exists()
