"""Issue 14 item 2: presets train what they name, from the CLI, on raw-scale activations."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from alignlab.cli import main
from alignlab.sae import build_sae, preset_config
from alignlab.sae.cache import FORMAT, MANIFEST, shard_name
from alignlab.sae.registry import preset_train_overrides
from alignlab.sae.trainer import TrainConfig, train_saes

D, N = 32, 128


def sparse_acts(rows: int, seed: int = 0, d: int = D) -> torch.Tensor:
    """Activations made of ~6 of 4d unit directions each, at raw residual-stream scale (norm ~100, offset)."""
    g = torch.Generator().manual_seed(seed)
    n_dirs = max(256, 4 * d)
    dirs = torch.nn.functional.normalize(torch.randn(n_dirs, d, generator=torch.Generator().manual_seed(99)), dim=1)
    on = torch.rand(rows, n_dirs, generator=g) < 6 / n_dirs
    mags = torch.rand(rows, n_dirs, generator=g) * 2 + 0.5
    return (on * mags) @ dirs * 40.0 + 5.0


def write_sparse_cache(directory, rows: int = 4096) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({"activations": sparse_acts(rows), "token_ids": torch.zeros(rows, dtype=torch.int32)},
              str(directory / shard_name(0)))
    (directory / MANIFEST).write_text(json.dumps({
        "format": FORMAT, "model": "tiny", "hook": "resid_post.1", "layer": 1, "d": D, "dtype": "float32",
        "context_size": 16, "n_tokens": rows, "rows_per_shard": rows, "shards": [{"file": shard_name(0), "rows": rows}]}))


def _train(out, *args):
    acts = out.parent / "acts"
    if not acts.exists():
        write_sparse_cache(acts)
    code = main(["sae", "train", str(acts), "--width", str(N // D), "--batch-size", "256", "--buffer-rows", "1024",
                 "--device", "cpu", "--out", str(out), *args])
    assert code == 0
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_lp_anneals_within_a_short_run_with_cli_knobs(tmp_path):
    log = _train(tmp_path / "lp", "--arch", "lp", "--steps", "20", "--log-every", "5", "--anneal-start", "0.25",
                 "--p-end", "0.5", "--p-updates", "3", "--anneal-q", "2")
    p = [r["p"] for r in log]
    assert p[0] == 1.0 and p[-1] == 0.5 and len(set(p)) >= 3  # was 1.0 throughout (start at step 15,000)
    cfg = json.loads((tmp_path / "lp" / "sae_0" / "cfg.json").read_text())["metadata"]["alignlab"]["config"]
    assert cfg["anneal_start_frac"] == 0.25 and cfg["p_end"] == 0.5 and cfg["n_sparsity_updates"] == 3


def test_matryoshka_trains_nested_levels_by_default_and_from_the_cli(tmp_path):
    def widths(out):
        return json.loads((out / "sae_0" / "cfg.json").read_text())["metadata"]["alignlab"]["config"]["matryoshka_widths"]

    log = _train(tmp_path / "m1", "--arch", "matryoshka", "--steps", "4", "--log-every", "4", "--k", "4")
    assert widths(tmp_path / "m1") == [8, 16, 32, 64, 128] and {f"mse_{i}" for i in range(5)} <= set(log[-1])
    _train(tmp_path / "m2", "--arch", "matryoshka", "--steps", "2", "--k", "4", "--matryoshka-widths", "1/4", "0.5", "1")
    assert widths(tmp_path / "m2") == [32, 64, 128]


def test_threshold_param_flag_reaches_jumprelu_only(tmp_path):
    _train(tmp_path / "j", "--arch", "jumprelu", "--arch", "gated", "--steps", "2", "--threshold-param", "log")
    cfgs = [json.loads((tmp_path / "j" / f"sae_{i}" / "cfg.json").read_text())["metadata"]["alignlab"]["config"]
            for i in range(2)]
    assert cfgs[0]["threshold_param"] == "log" and cfgs[1]["threshold_param"] == "linear"  # gated: the fallback
    assert preset_config("jumprelu", D, N).threshold_param == "linear"


def test_each_preset_keeps_its_own_optimiser_settings_in_one_stream(tmp_path):
    _train(tmp_path / "o", "--arch", "standard_april", "--arch", "gated", "--arch", "topk", "--steps", "2", "--k", "4")
    train = [json.loads((tmp_path / "o" / f"sae_{i}" / "training_config.json").read_text())["train"] for i in range(3)]
    assert (train[0]["lr"], train[0]["adam_betas"], train[0]["lr_schedule"]) == (5e-5, [0.9, 0.999], "linear_decay_tail")
    assert (train[1]["lr"], train[1]["adam_betas"]) == (3e-4, [0.0, 0.999])
    assert train[2]["lr"] is None and train[2]["adam_eps"] == 6.25e-10  # width-scaled TopK rule


def test_one_stream_with_per_sae_settings_equals_separate_runs():
    data = [sparse_acts(64, seed=s) for s in range(6)]
    cfg = TrainConfig(total_steps=6, batch_size=64, lr_warmup_steps=2, device="cpu", norm_estimate_batches=1)
    per = [{"lr": 5e-5, "adam_betas": (0.9, 0.999)}, {"lr": 1e-3}]

    def saes():
        return [build_sae(preset_config(p, D, N, normalize_activations="unit_mean_sq")) for p in ("standard_april", "gated")]

    together = train_saes(saes(), iter(data), cfg, progress=False, per_sae=per)
    for i, sae in enumerate(saes()):
        alone = train_saes([sae], iter(data), cfg, progress=False, per_sae=[per[i]])[0]
        for k, v in alone.sae.state_dict().items():
            assert torch.equal(v, together[i].sae.state_dict()[k]), (i, k)


def _held_out_l0(sae, x):
    with torch.no_grad():
        return float((sae.eval().encode(x) > 0).sum(-1).float().mean())


@pytest.mark.parametrize("preset", ["gated", "standard_bricken", "lp", "jumprelu"])
def test_default_presets_do_not_depend_on_the_raw_activation_scale(preset):
    """The defaults normalise inputs, so lambda means the same at any activation scale: training on x and on
    50 x gives the same codes (with the old raw-scale defaults the larger input was far denser)."""
    data = [sparse_acts(128, seed=s) for s in range(30)]
    held = sparse_acts(512, seed=999)
    per = {k: v for k, v in preset_train_overrides(preset).items() if v is not None}
    per["l1_warmup_steps"] = min(per.get("l1_warmup_steps", 0), 4)
    codes = []
    for scale in (1.0, 50.0):
        cfg = TrainConfig(total_steps=20, batch_size=128, lr_warmup_steps=2, device="cpu", norm_estimate_batches=5)
        sae = build_sae(preset_config(preset, D, N))
        trained = train_saes([sae], iter([x * scale for x in data]), cfg, progress=False, per_sae=[per])[0].sae
        with torch.no_grad():
            codes.append(trained.eval().encode(held * scale))
    torch.testing.assert_close(codes[1], codes[0], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(os.environ.get("ALIGNLAB_SAE_SLOW") != "1", reason="minutes on CPU: set ALIGNLAB_SAE_SLOW=1")
def test_default_presets_are_sparse_on_the_embedded_model(default_model):
    """Issue 14: on SmolLM2-135M layer 15 (width 2 x 576), 200 steps of 512 tokens with the preset defaults give
    held-out L0 < 10% of the width (a lambda of 1e-3 at raw scale left L0 ~620 of 1152; JumpReLU with log theta
    stayed at ~537)."""
    from alignlab.data.text import iter_texts
    from alignlab.sae.activations import ActivationSource, ContextConfig, parse_hook, split_texts
    from alignlab.sae.buffer import TensorBatches

    src = ActivationSource(default_model.model, default_model.tokenizer, parse_hook("resid_post", 15),
                           split_texts(iter_texts(None, seed=0), "train"), ContextConfig(128), 16)
    rows = []
    for chunk in src.rows():
        rows.append(chunk)
        if sum(r.shape[0] for r in rows) >= 12_288:
            break
    acts = torch.cat(rows)
    train, held = acts[:10_240], acts[10_240:]
    presets = ["gated", "standard_bricken", "lp", "jumprelu"]
    saes = [build_sae(preset_config(p, 576, 1152)) for p in presets]
    per = [{k: v for k, v in preset_train_overrides(p).items() if v is not None} for p in presets]
    for o in per:
        o["l1_warmup_steps"] = min(o.get("l1_warmup_steps", 0), 40)
    cfg = TrainConfig(total_steps=200, batch_size=512, lr_warmup_steps=20, device="cpu", norm_estimate_batches=10)
    res = train_saes(saes, TensorBatches(train, 512, 220), cfg, progress=False, per_sae=per)
    l0 = {p: _held_out_l0(r.sae, held) for p, r in zip(presets, res)}
    print("held-out L0 of 1152:", {p: round(v, 1) for p, v in l0.items()})  # shown with -s
    assert all(v < 0.1 * 1152 for v in l0.values()), l0


def test_jumprelu_short_default_run_moves_every_threshold_and_l0_falls():
    """Issue 14: `--arch jumprelu` at the default learning rate (3e-4, warm-up 10% of the run, as the CLI sets it)
    must sparsify within a short run. The paper trains log theta; under Adam that changes theta by a factor of at
    most ~e^lr per step, so theta0 = 0.001 needs ~10^4 steps to reach the pre-activation scale (~1/sqrt(d) after
    unit-mean-square normalisation), and a 200-step run stayed a ReLU. The preset trains theta itself (SAELens,
    dictionary_learning): it moves additively by up to ~lr per step and reaches that scale within the run."""
    d, n, steps = 256, 1024, 200
    data = [sparse_acts(128, seed=s, d=d) for s in range(steps + 10)]  # raw scale; 10 batches estimate the scale
    held = sparse_acts(1024, seed=999, d=d)
    cfg = TrainConfig(total_steps=steps, batch_size=128, lr_warmup_steps=steps // 10, device="cpu",
                      norm_estimate_batches=10, log_every=steps // 5)
    assert preset_train_overrides("jumprelu").get("lr") is None and cfg.lr is None  # the default LR, 3e-4
    out = {}
    for param in ("linear", "log"):
        logs: list[dict] = []
        sae = build_sae(preset_config("jumprelu", d, n, threshold_param=param))
        trained = train_saes([sae], iter(data), cfg, progress=False, on_log=logs.append)[0].sae.eval()
        with torch.no_grad():
            z = trained.pre_acts(held)  # [1024, n]; the folded SAE on raw inputs gives the trained pre-activations
            out[param] = {"theta": sae.theta.detach().clone(), "l0": float((z > sae.theta).sum(-1).float().mean()),
                          "l0_at_theta0": float((z > 1e-3).sum(-1).float().mean()), "log": [r["l0"] for r in logs]}
    lin, log = out["linear"], out["log"]
    assert float(lin["theta"].min()) > 5e-3 and float(lin["theta"].mean()) > 1e-2, lin["theta"]  # every theta moved
    assert float(log["theta"].max()) < 1.2e-3  # the paper's log theta: still at theta0 after 200 steps
    # measured (CPU): theta min/mean 0.0082/0.016 vs 0.0010/0.0010; held-out L0 105 (162 at theta0) vs 198 (log)
    assert lin["l0"] < 0.75 * lin["l0_at_theta0"], lin  # the thresholds, not only the encoder, cut L0
    assert lin["l0"] < 0.65 * log["l0"], (lin["l0"], log["l0"])
    assert lin["l0"] < 0.12 * n and lin["log"][-1] < 0.7 * lin["log"][0], lin["log"]
