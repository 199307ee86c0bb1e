"""Collectives that keep DDP replicas identical to each other and to one process on the global batch (spec §4).

Under ``torchrun`` every rank holds a disjoint, equal-sized, contiguous slice of the global batch. Everything
computed from data besides gradients goes through here, so that each rank gets the value a single process
would compute on the whole batch: the input scale (summed statistics), the b_dec initialisation and the
resampling inputs (the gathered batch), the p-annealing sums (all-reduced), and the BatchTopK selection
(one global threshold over the gathered candidates; see ``global_batch_topk``). All functions are no-ops
(or plain local computations) without an initialised process group.
"""

from __future__ import annotations

import torch
from torch import Tensor


def dist_info() -> tuple[bool, int, int]:
    """(initialised, rank, world size)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def all_gather_rows(x: Tensor) -> Tensor:
    """[B_local, ...] on every rank -> [world * B_local, ...], rank 0's rows first (the global batch)."""
    on, _, world = dist_info()
    if not on or world == 1:
        return x
    import torch.distributed as dist

    home = x.device
    x = x.to(_comm_device()).contiguous()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x)
    return torch.cat(parts).to(home)


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum of ``t`` over ranks (a new tensor; ``t`` itself is unchanged)."""
    on, _, world = dist_info()
    if not on or world == 1:
        return t
    import torch.distributed as dist

    out = t.to(_comm_device(), copy=True)
    dist.all_reduce(out)
    return out.to(t.device)


def _comm_device() -> torch.device:
    """Where collectives run: the current GPU under NCCL (which cannot send CPU tensors), else the CPU."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def global_batch_topk(acts: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """(flat_idx, vals, theta_sample) of the local entries among the B*k largest of the GLOBAL batch.

    ``acts`` is this rank's [B_local, d_sae] ReLU pre-activations; M = world * B_local * k entries are kept
    over all ranks, exactly as one process would keep them on the whole batch. Each rank offers its top
    2 * B_local * k values; the M-th largest gathered value tau is the global cut and each rank keeps its
    entries >= tau (ties at tau > 0 are measure-zero for real activations). If some rank's smallest offer still
    reaches tau, it might hold more of the top M, and the gather is repeated with M offers per rank, which is
    always exact. Every rank takes that decision from the same gathered tensor, so none waits alone.
    ``theta_sample`` is the smallest positive selected value of the whole batch, equal on every rank.
    """
    _, _, world = dist_info()
    flat = acts.flatten()
    m_global = world * acts.shape[0] * k
    for offer in (2 * acts.shape[0] * k, m_global):
        c = min(offer, flat.numel())
        cand, cidx = flat.topk(c, sorted=False)
        gathered = all_gather_rows(cand).view(world, c)
        top = gathered.flatten().topk(min(m_global, gathered.numel()), sorted=False).values
        tau = top.min()
        mins = gathered.min(dim=1).values
        if c == flat.numel() or not bool(((mins >= tau) & (mins > 0)).any()):
            break
    keep = cand >= tau if bool(tau > 0) else cand > 0
    pos = top[top > 0]
    theta_sample = pos.min() if pos.numel() else torch.zeros((), dtype=acts.dtype, device=acts.device)
    return cidx[keep], cand[keep], theta_sample


@torch.no_grad()
def check_replicas_equal(module: torch.nn.Module, what: str) -> None:
    """Raise when a parameter or buffer differs between ranks (a guard on the end result; one small gather)."""
    on, _, world = dist_info()
    if not on or world == 1:
        return
    from alignlab.errors import AlignlabError

    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.numel()]
    # two order-sensitive checksums per tensor: any difference in any element shows (up to fp64 rounding ties)
    sums = torch.stack([torch.stack([t.double().sum(), (t.double().flatten() * torch.arange(
        1, t.numel() + 1, dtype=torch.float64, device=t.device)).sum()]) for t in tensors]).flatten()
    every = all_gather_rows(sums[None])  # [world, 2 * n_tensors]
    if not bool((every == every[0]).all()):
        raise AlignlabError(f"DDP replicas of {what} diverged; report this with the command line (rank 0's copy was saved)")
