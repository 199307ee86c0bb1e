"""The study's LM stage on a tiny model: CE loss recovered through InputScaled, probes, both cached per SAE."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from alignlab.sae import build_sae, preset_config, save_sae
from alignlab.sae.activations import Hook
from alignlab.sae.saelens_format import fold_input_scale
from alignlab.sae.study_config import StudyConfig
from alignlab.sae.study_lm import InputScaled, ce_recovered, run_probes
from alignlab.sae.study_probe import CATEGORIES, ProbeData


def _sae(d: int, seed: int = 0):
    return build_sae(preset_config("standard_bricken", d, 2 * d, normalize_activations="none", seed=seed))


def test_input_scaled_equals_the_folded_sae():
    sae = _sae(8)
    x = torch.randn(16, 8) * 40
    folded = fold_input_scale(_with_scale(sae, 0.05)).eval()  # the same SAE, folded to consume raw x
    wrapped = InputScaled(sae, 0.05)
    with torch.no_grad():
        assert torch.allclose(wrapped.decode(wrapped.encode(x)), folded(x), rtol=1e-5, atol=1e-4)
    assert wrapped.cfg is sae.cfg


def _with_scale(sae, s):
    out = sae.__class__(sae.cfg.replace(input_scale=s))
    out.load_state_dict(sae.state_dict())
    return out


def test_ce_recovered_is_measured_once_and_cached(tmp_path, tiny_llama, monkeypatch):
    model, tok = tiny_llama
    save_sae(_sae(64), tmp_path / "saes" / "a" / "sae")
    results = {"a": {"name": "a", "sae_dir": "saes/a/sae"}}
    cfg = StudyConfig(ce_tokens=32, ce_batch_contexts=2)
    lm = SimpleNamespace(model=model, tokenizer=tok)
    manifest = {"context_size": 16, "text_source": None}
    first = ce_recovered(tmp_path, results, lm, Hook("block_out", 1), manifest, 0.1, cfg, lambda m: None)
    assert isinstance(first["a"], float) and (tmp_path / "saes" / "a" / "ce.json").is_file()
    import alignlab.sae.evaluate as ev

    monkeypatch.setattr(
        ev, "evaluate_saes", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-evaluated"))
    )
    assert (
        ce_recovered(tmp_path, results, lm, Hook("block_out", 1), manifest, 0.1, cfg, lambda m: None) == first
    )


def test_run_probes_finds_a_planted_latent(tmp_path):
    g = torch.Generator().manual_seed(0)
    n = 600
    cats = torch.full((n,), -1, dtype=torch.int8)
    cats[::3] = CATEGORIES.index("comment")
    cats[1::3] = CATEGORIES.index("name")
    acts = torch.randn(n, 8, generator=g)
    acts[cats == CATEGORIES.index("comment"), 2] += 4.0  # the comment class lives on input dim 2
    data = ProbeData(acts, cats, torch.zeros(n, dtype=torch.int16), torch.arange(n, dtype=torch.int32) // 30)
    sae = _sae(8)
    with torch.no_grad():  # latent 5 reads input dim 2
        sae.W_enc.zero_()
        sae.W_enc[2, 5] = 1.0
        sae.b_dec.zero_()
    save_sae(sae, tmp_path / "s")
    chosen = {"standard": {"name": "s", "sae_dir": "s", "heldout": {"l0": 1.0}}}
    out = run_probes(tmp_path, data, chosen, 1.0, StudyConfig(probe_ks=(1, 2)), lambda m: None)
    acc = out["saes"]["standard"]["acc"]
    assert acc["comment"]["1"] > 0.9 and out["dense"]["comment"] > 0.9
    assert set(out["tasks"]) >= {"comment", "name"}
    assert (tmp_path / "probe" / "s.json").is_file() and (tmp_path / "probe" / "dense.json").is_file()
