"""Helper for test_trainer.py: 2-process gloo DDP training in a FRESH interpreter (run as a script).

Forking workers from inside the pytest process can deadlock once that process runs an OpenMP pool, so the test
starts this script with OMP_NUM_THREADS=1; it forks its two workers before any parallel region has run.
usage: python ddp_run.py DATA.pt SPEC.json OUT_DIR   (writes OUT_DIR/rank<r>.safetensors for every rank)

SPEC.json: {"train": TrainConfig fields, "saes": [[architecture, SAEConfig fields], ...]}.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import save_file

from alignlab.sae import SAEConfig, build_sae
from alignlab.sae.trainer import TrainConfig, train_saes


def make_saes(specs: list, d: int, n: int) -> list:
    """The SAEs of SPEC; bricken/gated get 8 latents that never fire, so resampling has work to do."""
    saes = []
    for i, (arch, kw) in enumerate(specs):
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
        sae = build_sae(SAEConfig(architecture=arch, d_in=d, d_sae=n, l1_coefficient=0.01, seed=i, **kw))
        with torch.no_grad():
            if arch == "gated":
                sae.b_gate[:8] = -100.0
            elif arch == "standard" and kw.get("recipe", "bricken") == "bricken":
                sae.b_enc[:8] = -100.0
        saes.append(sae)
    return saes


def train_config(fields: dict, world: int = 1) -> TrainConfig:
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return TrainConfig(**{**fields, "batch_size": fields["batch_size"] // world})


def worker(rank: int, world: int, init: str, data: list, spec: dict, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        d, per = data[0].shape[1], data[0].shape[0] // world
        local = [b[rank * per : (rank + 1) * per] for b in data]  # contiguous slices: gathered = global batch
        res = train_saes(make_saes(spec["saes"], d, 4 * d), iter(local), train_config(spec["train"], world),
                         progress=False)
        tensors = {f"{i}.{k}": v.contiguous() for i, r in enumerate(res) for k, v in r.sae.state_dict().items()}
        save_file(tensors, str(Path(out) / f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    data = torch.load(sys.argv[1])
    spec = json.loads(Path(sys.argv[2]).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(worker, args=(2, f"file://{tmp}/init", data, spec, sys.argv[3]), nprocs=2, join=True,
                           start_method="fork")
