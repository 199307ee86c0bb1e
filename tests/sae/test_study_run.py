"""`alignlab sae study` end to end on tiny activations: outputs, resume, refusal to mix settings, CLI."""

from __future__ import annotations

import json
import os
import re
import sys
from types import SimpleNamespace

import pytest

from alignlab.errors import AlignlabError
from alignlab.sae.study import run_study
from alignlab.sae.study_config import SPARSITY, StudyConfig

sys.path.insert(0, os.path.dirname(__file__))
from conftest import write_cache  # noqa: E402


def _cfg(**kw) -> StudyConfig:
    fields = {
        "archs": ("standard", "gated"),
        "expansion": 2,
        "steps": 10,
        "batch_size": 32,
        "widths": (1, 2),
        "stability_ps": (1.0, 0.5),
        "stability_steps": 10,
        "heldout_rows": 64,
        "ce_tokens": 0,
        "probe_tokens": 0,
        "checkpoint_every": 4,
        "device": "cpu",
        "lrs": (1e-3, 3e-3, 1e-2),
        "default_lr": 3e-3,
    }
    fields.update(kw)
    return StudyConfig(**fields)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    acts = write_cache(root / "acts", d=8, rows=512)
    study = run_study(acts, root / "out", _cfg(), log=lambda m: None)
    return acts, root / "out", study


def test_study_writes_json_html_and_answers_from_its_points(tiny_study):
    _acts, out, study = tiny_study
    on_disk = json.loads((out / "study.json").read_text())
    ids = [a["id"] for a in on_disk["answers"]]
    assert ids == [
        "frontiers",
        "b_mag",
        "lr_sweep",
        "width",
        "rescale_shift",
        "untied_mag",
        "no_aux",
        "lp_pareto",
        "lp_stability",
        "probing",
    ]
    best = on_disk["frontier_best_lr"]
    assert set(best) >= {
        "standard",
        "gated",
        "gated_no_bmag",
        "gated_untied_mag",
        "gated_no_aux",
        "rescale_shift",
    }
    assert all(len(best[a]) == 4 for a in best)  # >= 4 sparsity settings each
    assert on_disk["best_lr"]["gated"] in (1e-3, 3e-3, 1e-2)
    assert len(on_disk["lr_sweep"]["gated"]["points"]) == 3
    b_mag = next(a for a in on_disk["answers"] if a["id"] == "b_mag")
    vals = b_mag["matched"]["fvu"]["values"]
    assert f"gated FVU {vals['gated']['value']:.4f}" in b_mag["answer"]
    for entry in on_disk["answers"]:  # each question: the compared SAEs with their (L0, CE, FVU) points
        assert entry["answer"] and entry["points"] or entry["id"] == "probing", entry["id"]
        for pts in entry["points"].values():
            assert all({"name", "l0", "ce", "fvu"} <= set(p) for p in pts)
    assert {k: len(v) for k, v in b_mag["points"].items()} == {"gated": 4, "gated_no_bmag": 4}
    assert {p["name"] for p in b_mag["points"]["gated"]} == {p["name"] for p in best["gated"]}
    lr_labels = set(next(a for a in on_disk["answers"] if a["id"] == "lr_sweep")["points"])
    assert {"standard lr=0.003", "gated lr=0.003", "standard sweep", "gated sweep"} <= lr_labels
    assert on_disk["outliers"]["rows_dropped"] == 0 and on_disk["outliers"]["rows_total"] == 512
    stab = {r["name"]: r for r in on_disk["stability"]}
    assert set(stab) == {"p=1", "p=1_eps=0.001", "p=0.5", "p=0.5_eps=0.001"}
    assert all(len(r["grad_norm_trace"]) == 10 for r in stab.values())
    assert stab["p=1_eps=0.001"]["same_as"] == "p=1"  # (f + eps)^1 - eps = f: not trained twice
    html = (out / "study.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    assert not re.search(r"(src|href)\s*=\s*['\"]https?:", html)
    assert "measured answer" in html


def test_rerun_skips_finished_slots_and_retrains_only_missing_ones(tiny_study, monkeypatch):
    acts, out, study = tiny_study
    import alignlab.sae.trainer as trainer

    calls = []
    real = trainer.train_saes
    monkeypatch.setattr(
        trainer, "train_saes", lambda saes, *a, **k: calls.append(len(saes)) or real(saes, *a, **k)
    )
    again = run_study(acts, out, _cfg(), log=lambda m: None)
    assert calls == []  # everything finished is skipped
    assert again["frontier_best_lr"] == study["frontier_best_lr"]
    victim = study["frontier_best_lr"]["gated_no_aux"][0]["name"]
    (out / "saes" / victim / "result.json").unlink()
    run_study(acts, out, _cfg(), log=lambda m: None)
    assert calls == [1]


def test_interrupted_group_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import dataclasses

    import alignlab.sae.trainer as trainer
    from alignlab.sae import study_train
    from alignlab.sae.cache import ActivationCache

    rows = ActivationCache(write_cache(tmp_path / "acts", d=8, rows=512)).load_all()
    cfg, root = _cfg(), tmp_path / "out"
    specs = [study_train.SaeSpec("frontier", "standard", SPARSITY["standard"][0], 3e-3, 2)]
    gdir = root / "train" / study_train.group_id(specs, cfg)
    real = trainer.train_saes

    def killed_after_5_steps(saes, batches, tcfg, **kw):
        real(saes, batches, dataclasses.replace(tcfg, total_steps=5), **kw)  # leaves the step-5 checkpoint
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train_saes", killed_after_5_steps)
    with pytest.raises(KeyboardInterrupt):
        study_train.train_group(specs, rows[:-64], rows[-64:].float(), 1.0, cfg, root, {})
    assert json.loads((gdir / "checkpoints" / "latest.json").read_text())["step"] == 5
    seen: dict = {}
    monkeypatch.setattr(trainer, "train_saes", lambda *a, **k: seen.update(k) or real(*a, **k))
    res = study_train.train_group(specs, rows[:-64], rows[-64:].float(), 1.0, cfg, root, {})
    assert seen["resume"] is True and res[specs[0].name]["steps"] == 10
    assert not (gdir / "checkpoints").exists()  # removed once the group finished


def test_outlier_rows_are_dropped_and_passed_through_in_the_splice():
    import torch

    from alignlab.sae import build_sae, preset_config
    from alignlab.sae.study import drop_outliers
    from alignlab.sae.study_lm import InputScaled

    x = torch.randn(200, 8)
    x[17] *= 100.0  # a massive-activation row
    kept, rec = drop_outliers(x.to(torch.bfloat16), 10.0)
    assert kept.shape == (199, 8) and rec["rows_dropped"] == 1 and rec["max_norm"] > rec["norm_limit"]
    sae = build_sae(preset_config("standard_bricken", 8, 16, normalize_activations="none"))
    wrapped = InputScaled(sae, 0.5, passthrough_norm=rec["norm_limit"])
    with torch.no_grad():
        out = wrapped.decode(wrapped.encode(x))
        plain = InputScaled(sae, 0.5)
        ref = plain.decode(plain.encode(x))
    assert torch.equal(out[17], x[17])  # the outlier row is left alone
    assert torch.equal(torch.cat([out[:17], out[18:]]), torch.cat([ref[:17], ref[18:]]))


def test_lp_slot_anneals_p_to_one_half_within_the_run(tmp_path):
    from alignlab.sae import study_train
    from alignlab.sae.cache import ActivationCache

    rows = ActivationCache(write_cache(tmp_path / "acts", d=8, rows=512)).load_all()
    spec = study_train.SaeSpec("frontier", "lp", SPARSITY["lp"][1], 3e-3, 2)
    res = study_train.train_group([spec], rows[:-64], rows[-64:].float(), 0.03, _cfg(), tmp_path / "out", {})
    train = res[spec.name]["train"]
    assert train["p"] == pytest.approx(0.5)  # annealed from 1 (issue 17: annealing that actually runs)
    assert train["lambda"] != pytest.approx(SPARSITY["lp"][1]["l1_coefficient"])  # lambda rescaled with p


def test_other_settings_in_the_same_folder_are_refused(tiny_study):
    acts, out, _study = tiny_study
    with pytest.raises(AlignlabError, match="other training settings"):
        run_study(acts, out, _cfg(steps=11), log=lambda m: None)


@pytest.mark.slow
def test_study_with_a_tiny_language_model_measures_ce_and_probes(tmp_path, tiny_llama):
    from alignlab.sae.activations import ActivationSource, ContextConfig, Hook, corpus
    from alignlab.sae.cache import cache_activations

    model, tok = tiny_llama
    src = ActivationSource(model, tok, Hook("block_out", 1), corpus(None, part="train"), ContextConfig(32), 8)
    cache_activations(
        src,
        tmp_path / "acts",
        640,
        meta={"model": "tiny", "hook": "resid_post.1", "layer": 1, "context_size": 32},
        dtype="float32",
        progress=False,
    )
    cfg = _cfg(ce_tokens=48, probe_tokens=400, probe_ks=(1, 2), ce_batch_contexts=2)
    study = run_study(
        tmp_path / "acts",
        tmp_path / "out",
        cfg,
        lm=SimpleNamespace(model=model, tokenizer=tok),
        log=lambda m: None,
    )
    pts = study["frontier_best_lr"]["gated"]
    assert all(p["ce"] is not None and p["ce"] == p["ce"] for p in pts)
    probe = study["probing"]
    assert set(probe["saes"]) == {"standard", "gated"} and probe["tasks"]
    for r in probe["saes"].values():
        assert set(r["mean_acc"]) == {"1", "2"} and all(0.0 <= v <= 1.0 for v in r["mean_acc"].values())
    assert "k=1: best" in next(a for a in study["answers"] if a["id"] == "probing")["answer"]


def test_help_lists_study(capsys):
    from alignlab.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["sae", "study", "--help"])
    assert exc.value.code == 0
    assert "--quick" in capsys.readouterr().out
