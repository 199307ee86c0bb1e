"""`alignlab sae train` under torchrun: join the process group torchrun describes (issue 14 item 8).

``torchrun --nproc-per-node N -m alignlab sae train CACHE ...`` starts N copies of the CLI with RANK,
WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT in the environment. Each copy joins the group (NCCL on CUDA, gloo
on CPU), takes GPU LOCAL_RANK, reads every N-th shard of the cache and trains on --batch-size / N rows per
step; the trainer keeps the replicas identical (distributed.py) and rank 0 writes the outputs.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

from alignlab.errors import AlignlabError


@dataclass(frozen=True)
class DDPInfo:
    rank: int
    """This process's rank (0 writes checkpoints, results and the printed summary)."""
    world: int
    """Number of processes."""
    device: str
    """The device this rank trains on (cuda:LOCAL_RANK, or cpu)."""


def ddp_from_env(required: bool, device: str) -> DDPInfo | None:
    """Join the torchrun process group when the environment describes one (None when it does not)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        if required:
            raise AlignlabError("--ddp needs the torchrun launcher: torchrun --nproc-per-node N -m alignlab sae train ...")
        return None
    import torch
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if on_cuda:
        if not torch.cuda.is_available():
            raise AlignlabError(f"--device {device} requested but CUDA is not available; pass --device cpu")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if on_cuda else "gloo")
        atexit.register(_shutdown)
    return DDPInfo(rank, world, device)


def local_batch(batch_size: int, world: int) -> int:
    """Rows per rank and step; the global --batch-size must split evenly (every rank steps the same)."""
    if batch_size % world:
        raise AlignlabError(f"--batch-size {batch_size} does not split evenly over {world} processes; "
                            f"pass a multiple of {world}")
    return batch_size // world


def _shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        # Meet the other ranks before tearing gloo down: a rank that destroys its group while a peer is still
        # in its last collective can abort the peer ("terminate called without an active exception").
        try:
            from datetime import timedelta

            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timedelta(seconds=60))
            else:
                dist.barrier()
        except Exception:  # noqa: BLE001 - a peer already gone: nothing left to wait for
            pass
        dist.destroy_process_group()
