"""Checkpoint directories: atomic layout, latest pointer, pruning, RNG states and mismatch errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.sae import SAEConfig, build_sae, load_sae
from alignlab.sae.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from alignlab.sae.trainer import TrainConfig, train_saes


def _sae(arch="standard", d_sae=32):
    return build_sae(SAEConfig(architecture=arch, d_in=8, d_sae=d_sae))


def test_layout_pointer_and_pruning(tmp_path):
    sae = _sae()
    for step in (5, 10, 15):
        save_checkpoint(tmp_path, step, {"step": step}, [sae], keep=2)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["step_000000010", "step_000000015"]
    assert json.loads((root / "latest.json").read_text()) == {"step": 15, "dir": "step_000000015"}
    latest = latest_checkpoint(tmp_path)
    assert load_checkpoint(latest)["step"] == 15
    assert not any(p.name.endswith(".tmp") for p in root.iterdir())
    x = torch.randn(4, 8)
    assert torch.equal(load_sae(latest / "sae_0")(x), sae(x))


def test_no_checkpoint_and_incomplete_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, 1, {"step": 1}, [_sae()])
    (tmp_path / "checkpoints" / "step_000000001" / "trainer_state.safetensors").unlink()
    with pytest.raises(AlignlabError, match="incomplete"):
        latest_checkpoint(tmp_path)


def test_rng_states_round_trip():
    states = rng_states()
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_states(states)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a


def _run(saes, tmp_path, resume=False, steps=3):
    data = [torch.randn(16, 8) for _ in range(steps)]
    cfg = TrainConfig(total_steps=steps, batch_size=16, lr_warmup_steps=1, log_every=1, device="cpu")
    return train_saes(saes, iter(data), cfg, out_dir=tmp_path, resume=resume, progress=False)


def test_resume_with_other_architecture_or_width_is_one_line_error(tmp_path):
    _run([_sae("gated")], tmp_path)
    with pytest.raises(AlignlabError, match="holds a gated SAE with d_in=8, d_sae=32") as e:
        _run([_sae("standard")], tmp_path, resume=True)
    assert "\n" not in str(e.value)
    with pytest.raises(AlignlabError, match="d_sae=64"):
        _run([_sae("gated", 64)], tmp_path, resume=True)
    with pytest.raises(AlignlabError, match="holds 1 SAEs but 2 were passed"):
        _run([_sae("gated"), _sae("gated")], tmp_path, resume=True)


def test_final_outputs_written(tmp_path):
    res = _run([_sae("standard")], tmp_path)
    assert res[0].path == tmp_path / "sae_0"
    assert (tmp_path / "sae_0" / "cfg.json").is_file() and (tmp_path / "sae_0" / "training_config.json").is_file()
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1, 2, 3]
    rec = json.loads(lines[-1])
    for key in ("loss", "mse", "sparsity", "l0", "fvu", "lr", "lambda", "dead_frac", "dense_frac", "tokens_per_s"):
        assert key in rec


class _Payload:
    """Unpickling this creates ``marker``: stands for arbitrary code in a crafted trainer_state.pt."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_pickle(directory, marker):
    import pickle

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "trainer_state.pt").write_bytes(pickle.dumps({"step": _Payload(marker)}))


@pytest.mark.parametrize("where", ["absolute", "dotdot", "legacy_in_place"])
def test_resume_never_unpickles_a_crafted_checkpoint(tmp_path, fake_cache, capsys, where):
    """Issue 12: latest.json naming a pickle (outside --out, via .., or an old-format state) runs no code."""
    from alignlab.cli import main

    out, marker = tmp_path / "out", tmp_path / "PWNED"
    root = out / "checkpoints"
    target = {"absolute": tmp_path / "evil", "dotdot": tmp_path / "evil", "legacy_in_place": root / "step_000000001"}
    _evil_pickle(target[where], marker)
    name = {"absolute": str(tmp_path / "evil"), "dotdot": "../../evil", "legacy_in_place": "step_000000001"}[where]
    root.mkdir(parents=True, exist_ok=True)
    (root / "latest.json").write_text(json.dumps({"step": 1, "dir": name}))
    code = main(["sae", "train", str(fake_cache), "--arch", "standard", "--width", "2", "--steps", "2",
                 "--batch-size", "32", "--device", "cpu", "--resume", "--out", str(out)])
    err = capsys.readouterr().err
    assert not marker.exists()
    assert code == 2 and err.startswith("alignlab: error:") and err.count("\n") == 1, err


def test_checkpoint_state_is_json_and_safetensors_and_sae_code_never_unpickles(tmp_path):
    from pathlib import Path

    save_checkpoint(tmp_path, 3, {"step": 3, "ids": {0: (1, 2.5)}, "t": torch.arange(3), "rng": rng_states()}, [_sae()])
    step_dir = tmp_path / "checkpoints" / "step_000000003"
    assert sorted(p.name for p in step_dir.iterdir() if p.is_file()) == ["trainer_state.json",
                                                                         "trainer_state.safetensors"]
    state = load_checkpoint(step_dir)
    assert state["ids"] == {0: (1, 2.5)} and torch.equal(state["t"], torch.arange(3))
    set_rng_states(state["rng"])  # Python tuple state and the NumPy uint32 array come back as they were
    src = Path(__file__).parents[2] / "src" / "alignlab" / "sae"
    for f in src.glob("*.py"):
        text = f.read_text()
        assert "weights_only=False" not in text and "import pickle" not in text, f.name
