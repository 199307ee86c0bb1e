"""Training checkpoints for exact resume (spec §4).

Layout::

    out_dir/checkpoints/step_000001000/
        trainer_state.json         # step, data cursor, RNG states, configs, per-SAE optimiser/counters/annealer
        trainer_state.safetensors  # ... and their tensors (state_io.py: no pickle, loading never runs code)
        sae_0/ cfg.json sae_weights.safetensors ...   # each SAE in SAELens format (raw units), for users
    out_dir/checkpoints/latest.json                   # {"step": 1000, "dir": "step_000001000"}

A checkpoint directory is written under a temporary name and renamed into place, so a killed run never
leaves a half-written checkpoint that a resume could trust. ``latest.json`` may only name a ``step_N`` folder
directly inside ``checkpoints/`` (no absolute path, no ``..``, no symlink out of it).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignlab.errors import AlignlabError
from alignlab.io import write_json_atomic
from alignlab.sae.base import SAE
from alignlab.sae.saelens_format import save_sae
from alignlab.sae.state_io import load_state, save_state

STATE_STEM = "trainer_state"
STATE_FILES = (f"{STATE_STEM}.json", f"{STATE_STEM}.safetensors")
LEGACY_PICKLE = "trainer_state.pt"  # written before issue 12; never loaded (unpickling can run code)
_STEP_DIR = re.compile(r"step_[0-9]{1,12}")


def rng_states() -> dict[str, Any]:
    """Python, NumPy, torch CPU and every CUDA device's RNG state."""
    out: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # a tuple holding a uint32 array: state_io stores both exactly
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(out_dir: Path, step: int, state: dict[str, Any], saes: list[SAE], keep: int = 2) -> Path:
    """Write one checkpoint directory atomically and point latest.json at it; keep the newest ``keep``."""
    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:09d}"
    final = root / name
    tmp = root / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_state(tmp, STATE_STEM, state)
    for i, sae in enumerate(saes):
        save_sae(sae, tmp / f"sae_{i}")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json_atomic(root / "latest.json", {"step": step, "dir": name})
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    if keep <= 0:
        return
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))
    for old in dirs[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The directory latest.json points at, or None when there is no checkpoint yet.

    The pointer is untrusted input: it must name a ``step_N`` folder directly inside ``checkpoints/``.
    """
    root = Path(out_dir) / "checkpoints"
    pointer = root / "latest.json"
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text(encoding="utf-8"))["dir"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise AlignlabError(f"{pointer} is corrupt; delete it to resume from the newest step_* folder") from None
    if not isinstance(name, str) or not _STEP_DIR.fullmatch(name):
        raise AlignlabError(f"{pointer} names {str(name)[:80]!r}, not a step_N folder inside {root}; "
                            "checkpoints are only read from inside --out (delete the pointer to start over)")
    path = root / name
    if path.is_symlink() or not path.resolve().is_relative_to(root.resolve()):
        raise AlignlabError(f"{path} leads outside {root}; checkpoints are only read from inside --out")
    if (path / LEGACY_PICKLE).exists() and not (path / STATE_FILES[0]).exists():
        raise AlignlabError(f"checkpoint {path} is in the old pickle format, which alignlab no longer loads "
                            "(unpickling can run code); delete it to start over")
    if not all((path / f).is_file() for f in STATE_FILES):
        raise AlignlabError(f"checkpoint {path} is incomplete; delete it and {pointer} to start over")
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load the trainer state (JSON + safetensors; nothing is unpickled)."""
    state = load_state(Path(path), STATE_STEM)
    if not isinstance(state, dict):
        raise AlignlabError(f"checkpoint {path} holds no trainer state; delete it to start over")
    return state


def write_training_checkpoint(out: Path, step: int, consumed: int, slots: list, cfg: Any, rank: int, dist_on: bool) -> None:
    """Checkpoint every trainer slot; under DDP rank 0 writes between barriers (the sparsify #69 hang)."""
    from dataclasses import asdict

    if dist_on:
        import torch.distributed as dist

        dist.barrier()
    if rank == 0:
        state = {
            "step": step,
            "batches_consumed": consumed,
            "rng": rng_states(),
            "train_config": asdict(cfg),
            "slots": [s.state_dict() for s in slots],
        }
        save_checkpoint(out, step, state, [s.sae for s in slots], keep=cfg.keep_checkpoints)
    if dist_on:
        import torch.distributed as dist

        dist.barrier()


def restore_training(path: Path, slots: list) -> tuple[int, int]:
    """Load a checkpoint into the trainer slots; returns (step, batches consumed)."""
    from alignlab.sae.base import SAEConfig
    from alignlab.sae.saelens_format import check_expected

    state = load_checkpoint(path)
    if not {"step", "batches_consumed", "rng", "slots"} <= set(state):
        raise AlignlabError(f"checkpoint {path} lacks the trainer state fields; delete it to start over")
    saved = state["slots"]
    if len(saved) != len(slots):
        raise AlignlabError(
            f"checkpoint {path} holds {len(saved)} SAEs but {len(slots)} were passed; resume with the same set"
        )
    for s, st in zip(slots, saved):
        check_expected(SAEConfig.from_dict(st["sae_config"]), s.sae.cfg, path)
        s.load_state_dict(st)
    set_rng_states(state["rng"])
    return int(state["step"]), int(state["batches_consumed"])


def append_log(path: Path, rec: dict) -> None:
    """Append one JSONL record (an append-only stream; truncate_log rewrites it atomically on resume)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


def truncate_log(out: Path, step: int) -> None:
    """Drop log records past ``step`` (written by a run killed after its last checkpoint)."""
    from alignlab.io import write_text_atomic

    path = Path(out) / "train_log.jsonl"
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        keep = [ln for ln in lines if ln.strip() and json.loads(ln)["step"] <= step]
        write_text_atomic(path, "".join(ln + "\n" for ln in keep))
