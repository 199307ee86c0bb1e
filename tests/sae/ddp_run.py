"""Helper for test_trainer.py: 2-process gloo DDP training in a FRESH interpreter (run as a script).

Forking workers from inside the pytest process can deadlock once that process runs an OpenMP pool, so the test
starts this script with OMP_NUM_THREADS=1; it forks its two workers before any parallel region has run.
usage: python ddp_run.py DATA.pt CONFIG.json OUT.pt
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing as mp

from alignlab.sae import SAEConfig, build_sae
from alignlab.sae.trainer import TrainConfig, train_saes


def make_saes(d: int, n: int) -> list:
    return [build_sae(SAEConfig(architecture=a, d_in=d, d_sae=n, l1_coefficient=0.01, **kw))
            for a, kw in (("gated", {}), ("jumprelu", {"bandwidth": 0.5, "threshold_init": 0.1}))]


def worker(rank: int, world: int, init: str, data: list, cfg: dict, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        d = data[0].shape[1]
        local = [b[rank::world] for b in data]  # each rank: a disjoint shard of the global batch
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
        tc = TrainConfig(**{**fields, "batch_size": cfg["batch_size"] // world})
        res = train_saes(make_saes(d, 4 * d), iter(local), tc, progress=False)
        if rank == 0:
            torch.save([r.sae.state_dict() for r in res], out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    data = torch.load(sys.argv[1])
    cfg = json.loads(Path(sys.argv[2]).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(worker, args=(2, f"file://{tmp}/init", data, cfg, sys.argv[3]), nprocs=2, join=True,
                           start_method="fork")
