"""Train one or several SAEs from ONE stream of activation batches (spec §4).

Each SAE has its own optimiser, schedules, dead-latent counters and RNG, and sees exactly the batches it
would see alone, so N SAEs trained together equal N separate runs bit for bit. Under ``torchrun`` (when
``torch.distributed`` is initialised) each SAE is wrapped in DistributedDataParallel: every rank's iterator
must yield that rank's disjoint shard of the global batch; gradients are averaged, renormalisation runs after
the all-reduce, dead counters are all-reduced, resampling is decided identically on every rank and its
result broadcast from rank 0, the BatchTopK theta is averaged, and rank 0 writes checkpoints between barriers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignlab.errors import AlignlabError
from alignlab.io import write_json_atomic
from alignlab.sae.base import SAE, LossOutput, TrainState, geometric_median
from alignlab.sae.checkpoint import (
    append_log,
    latest_checkpoint,
    restore_training,
    truncate_log,
    write_training_checkpoint,
)
from alignlab.sae.distributed import all_gather_rows, all_reduce_sum, check_replicas_equal, dist_info
from alignlab.sae.finite import FiniteGuard
from alignlab.sae.saelens_format import fold_input_scale, save_sae
from alignlab.sae.slot import Slot
from alignlab.sae.train_config import TrainConfig, slot_config


@dataclass
class TrainResult:
    sae: SAE
    """The trained SAE with any input scale folded in (consumes raw activations)."""
    path: Path | None
    """SAELens folder it was saved to (out_dir/sae_<i>), or None without out_dir."""
    steps: int
    tokens: int
    metrics: dict[str, Any] = field(default_factory=dict)
    """The last log record (loss terms, L0, FVU, dead/dense fractions ...)."""
    log_path: Path | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AlignlabError(f"device {name!r} requested but CUDA is not available; pass --device cpu")
    return dev


def _dist() -> tuple[bool, int, int]:
    return dist_info()


BAD_BATCH = "batch at step {step} contains NaN/inf activations; check the activation source"
_EAGER_BATCH_GUARD = FiniteGuard(torch.device("cpu"), BAD_BATCH)  # stateless: raises at once


def _check_batch(x: Any, step: int, d_in: int, guard: FiniteGuard = _EAGER_BATCH_GUARD) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] == 0:
        raise AlignlabError(f"batch at step {step} must be a non-empty [batch, d_in] tensor, got {getattr(x, 'shape', type(x))}")
    if x.shape[1] != d_in:
        raise AlignlabError(f"batch at step {step} has width {x.shape[1]} but the SAEs expect d_in={d_in}")
    guard.check(torch.isfinite(x).all(), step)
    return x if x.dtype == torch.float32 else x.float()


def _estimate_scales(it: Iterator[Tensor], slots: list[Slot], cfg: TrainConfig) -> int:
    """Consume norm_estimate_batches batches and set each normalising SAE's input_scale; returns batches used."""
    modes = {s.sae.cfg.normalize_activations for s in slots} - {"none"}
    if not modes:
        return 0
    n, norm_sum, sq_sum, used = 0, 0.0, 0.0, 0
    for _ in range(max(1, cfg.norm_estimate_batches)):
        try:
            x = _check_batch(next(it), -1, slots[0].sae.cfg.d_in).double()
        except StopIteration:
            break
        used += 1
        norms = x.norm(dim=1)
        n, norm_sum, sq_sum = n + x.shape[0], norm_sum + float(norms.sum()), sq_sum + float(norms.pow(2).sum())
    # under DDP: the statistics of the global batches, identical on every rank (issue 14 item 1)
    total = all_reduce_sum(torch.tensor([n, norm_sum, sq_sum], dtype=torch.float64))
    n, norm_sum, sq_sum = int(total[0]), float(total[1]), float(total[2])
    if n == 0:
        raise AlignlabError("no activation batches to estimate the input scale from; the source is empty")
    for s in slots:
        mode, d = s.sae.cfg.normalize_activations, s.sae.cfg.d_in
        if mode == "expected_average_only_in":  # s = sqrt(d) / E||x|| (SAELens, Anthropic April 2024)
            s.sae.cfg = s.sae.cfg.replace(input_scale=math.sqrt(d) / max(norm_sum / n, 1e-12))
        elif mode == "unit_mean_sq":  # s = 1 / sqrt(E||x||^2) (dictionary_learning, Gemma Scope)
            s.sae.cfg = s.sae.cfg.replace(input_scale=1.0 / math.sqrt(max(sq_sum / n, 1e-24)))
    return used


@torch.no_grad()
def _init_b_dec(slots: list[Slot], x: Tensor) -> None:
    """b_dec from the first batch (mean or geometric median), only for SAEs whose b_dec is still all zeros.

    Under DDP the ranks' slices are gathered first, so every rank sets the b_dec of the global batch.
    """
    if any(s.sae.cfg.b_dec_init in ("mean", "geometric_median") for s in slots):
        x = all_gather_rows(x)
    for s in slots:
        mode = s.sae.cfg.b_dec_init
        if bool(s.sae.b_dec.any()):
            continue  # an SAE that was trained before keeps its b_dec
        xs = x * s.sae.cfg.input_scale
        if mode == "mean":
            s.sae.b_dec.copy_(xs.mean(0))
        elif mode == "geometric_median":
            s.sae.b_dec.copy_(geometric_median(xs))


def _skip(it: Iterator[Tensor], batches: Any, n: int) -> None:
    if hasattr(batches, "skip"):
        batches.skip(n)
        return
    for i in range(n):
        try:
            next(it)
        except StopIteration:
            raise AlignlabError(f"the activation source ended after {i} of the {n} batches to skip on resume") from None


def train_saes(
    saes: list[SAE],
    batches: Iterable[Tensor],
    cfg: TrainConfig,
    *,
    out_dir: Path | str | None = None,
    resume: bool = False,
    progress: bool = True,
    on_log: Callable[[dict], None] | None = None,
    per_sae: list[dict[str, Any]] | None = None,
) -> list[TrainResult]:
    """Train ``saes`` (in place) on one stream of [batch_size, d_in] fp32 batches; see the module docstring.

    With ``out_dir``: JSONL log at out_dir/train_log.jsonl, checkpoints under out_dir/checkpoints, and each
    final SAE in SAELens format at out_dir/sae_<i>. ``resume=True`` continues from the latest checkpoint,
    skipping the batches already consumed (``batches.skip(n)`` when the source offers it).
    ``per_sae[i]`` overrides TrainConfig fields of SAE i's own optimiser and schedules (its preset's lr, Adam
    betas/eps, warm-ups, decay, resampling), so several presets trained from one stream each keep their recipe.
    """
    if not saes:
        raise AlignlabError("train_saes needs at least one SAE")
    d_in = saes[0].cfg.d_in
    if any(s.cfg.d_in != d_in for s in saes):
        raise AlignlabError("all SAEs trained from one activation stream must share d_in")
    device = resolve_device(cfg.device)
    distributed, rank, world = _dist()
    out = Path(out_dir) if out_dir is not None else None
    slots = [Slot(i, s, slot_config(cfg, per_sae[i] if per_sae else None), device, distributed)
             for i, s in enumerate(saes)]
    it = iter(batches)
    step, consumed = 0, 0
    ckpt = latest_checkpoint(out) if (resume and out is not None) else None
    if ckpt is not None:
        step, consumed = restore_training(ckpt, slots)
        _skip(it, batches, consumed)
        truncate_log(out, step)
    else:
        consumed = _estimate_scales(it, slots, cfg)
    log_path = out / "train_log.jsonl" if out is not None and rank == 0 else None
    last: dict[int, dict] = {}
    bar = _bar(progress and rank == 0, cfg.total_steps, step)
    t0, tok0 = time.perf_counter(), step * cfg.batch_size * world
    guards = [FiniteGuard(device, BAD_BATCH)] + [s.guard for s in slots]  # batch first: it explains a NaN loss
    while step < cfg.total_steps:
        try:
            raw = next(it)
        except StopIteration:
            break
        consumed += 1
        on_cpu = getattr(getattr(raw, "device", None), "type", "cpu") == "cpu"
        x = _check_batch(raw, step, d_in, _EAGER_BATCH_GUARD if on_cpu else guards[0]).to(device, non_blocking=True)
        if step == 0 and ckpt is None:
            _init_b_dec(slots, x)
        want_log = (step + 1) % cfg.log_every == 0 or step + 1 == cfg.total_steps
        scaled: dict[float, Tensor] = {1.0: x}
        recs = []
        for s in slots:
            sc = s.sae.cfg.input_scale
            if sc not in scaled:
                scaled[sc] = x * sc  # one scaled copy per distinct scale, shared by the SAEs using it
            recs.append(s.step(scaled[sc], step, want_log))
        step += 1
        if want_log:
            _raise_pending(guards)
            tps = (step * cfg.batch_size * world - tok0) / max(time.perf_counter() - t0, 1e-9)
            for s, rec in zip(slots, recs):
                rec["tokens_per_s"] = tps
                last[s.index] = rec
                if log_path is not None:
                    append_log(log_path, rec)
                if on_log is not None:
                    on_log(rec)
            _postfix(bar, last)
        if bar is not None:
            bar.update(1)
        if out is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.total_steps:
            _raise_pending(guards)
            write_training_checkpoint(out, step, consumed, slots, cfg, rank, distributed)
    if bar is not None:
        bar.close()
    _raise_pending(guards)
    if out is not None:
        write_training_checkpoint(out, step, consumed, slots, cfg, rank, distributed)
    return _finish(slots, out, step, cfg, world, last, log_path, rank)


def _raise_pending(guards: list[FiniteGuard]) -> None:
    for g in guards:
        g.raise_pending()


def _finish(slots, out, step, cfg, world, last, log_path, rank) -> list[TrainResult]:
    results = []
    for s in slots:
        check_replicas_equal(s.sae, f"SAE {s.index}")
        folded = fold_input_scale(s.sae).eval()
        path = None
        if out is not None and rank == 0:
            path = save_sae(folded, out / f"sae_{s.index}")
            write_json_atomic(path / "training_config.json", {"train": asdict(s.cfg_train), "steps": step})
        results.append(TrainResult(folded, path, step, step * cfg.batch_size * world, last.get(s.index, {}), log_path))
    return results


def _bar(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=None, desc="sae train", unit="step")


def _postfix(bar, last: dict[int, dict]) -> None:
    if bar is None:
        return
    post = {}
    for i, rec in sorted(last.items()):
        post[f"L0_{i}"] = f"{rec['l0']:.1f}"
        post[f"FVU_{i}"] = f"{rec['fvu']:.3f}"
    bar.set_postfix(post, refresh=False)


__all__ = ["LossOutput", "TrainConfig", "TrainResult", "TrainState", "train_saes"]
