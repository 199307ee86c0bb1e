"""Issue 14 item 8: `torchrun --nproc-per-node N -m alignlab sae train ...` (gloo on CPU), shards split by rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from alignlab.cli import main
from alignlab.sae.cache import ActivationCache

sys.path.insert(0, os.path.dirname(__file__))
from conftest import write_cache  # noqa: E402


def test_ranks_read_disjoint_shards_covering_the_cache(tmp_path):
    cache = ActivationCache(write_cache(tmp_path / "acts", rows=8, shards=5))
    seen = [[float(c[0, 0]) for c in cache.chunks(seed=3, rank=r, world=2)] for r in (0, 1)]
    assert len(seen[0]) == 3 and len(seen[1]) == 2 and not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(float(cache.load_shard(i)[0, 0]) for i in range(5))


def test_ddp_flag_without_torchrun_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    acts = write_cache(tmp_path / "acts")
    assert main(["sae", "train", str(acts), "--ddp", "--steps", "1", "--batch-size", "32", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "torchrun --nproc-per-node" in err and err.count("\n") == 1


def test_torchrun_two_processes_train_every_preset_in_sync(tmp_path):
    acts = write_cache(tmp_path / "acts", rows=128, shards=4)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "alignlab",
           "sae", "train", str(acts), "--ddp", "--arch", "gated", "--arch", "topk", "--arch", "batchtopk",
           "--arch", "standard_april", "--k", "4", "--width", "4", "--steps", "6", "--batch-size", "64",
           "--buffer-rows", "256", "--log-every", "3", "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(" -> ") == 4  # rank 0 prints the summary, rank 1 stays quiet
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert {r["tokens"] for r in log if r["step"] == 6} == {6 * 64}  # tokens of both ranks
    for i in range(4):
        assert (out / f"sae_{i}" / "sae_weights.safetensors").is_file()
    from alignlab.sae import load_sae

    x = ActivationCache(acts).load_shard(0).float()
    assert torch.isfinite(load_sae(out / "sae_0")(x)).all()
