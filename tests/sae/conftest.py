"""Fixtures of the SAE tests: a small activation cache written directly in the cache's documented layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from alignlab.sae.cache import FORMAT, MANIFEST, shard_name


def write_cache(directory: Path, d: int = 8, rows: int = 256, seed: int = 0, shards: int = 1) -> Path:
    """An fp32 cache of ``shards`` x ``rows`` random activations of width ``d`` (no model needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(shards):
        acts = torch.randn(rows, d, generator=g) * 30.0 + 5.0  # raw residual streams are large and offset
        save_file({"activations": acts, "token_ids": torch.zeros(rows, dtype=torch.int32)}, str(directory / shard_name(i)))
    man = {"format": FORMAT, "model": "tiny", "hook": "resid_post.1", "layer": 1, "d": d, "dtype": "float32",
           "context_size": 16, "n_tokens": rows * shards, "complete": True, "rows_per_shard": rows,
           "shards": [{"file": shard_name(i), "rows": rows} for i in range(shards)]}
    (directory / MANIFEST).write_text(json.dumps(man))
    return directory


@pytest.fixture
def fake_cache(tmp_path):
    return write_cache(tmp_path / "acts")
