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
from alignlab.sae.optim import default_topk_lr, make_adam, project_decoder_grads_, resample_dead_
from alignlab.sae.saelens_format import fold_input_scale, save_sae
from alignlab.sae.schedules import LR_SCHEDULES, PAnnealer, l1_factor, lr_factor, resample_lr_factor


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every SAE trained from one activation stream."""

    total_steps: int = 1000
    """Optimiser steps (schedules are functions of the step)."""
    batch_size: int = 4096
    """Tokens (activation rows) per step; the iterator must yield [batch_size, d_in] batches."""
    lr: float | None = None
    """Adam learning rate (None: 2e-4/sqrt(n/2^14) for the TopK family, 3e-4 otherwise)."""
    lr_warmup_steps: int = 1000
    """Linear LR warm-up steps."""
    lr_schedule: str = "constant"
    """constant | cosine | linear_decay_tail (after warm-up)."""
    lr_decay_steps: int = 0
    """linear_decay_tail: decay over the final N steps (0: use lr_decay_frac)."""
    lr_decay_frac: float = 0.0
    """linear_decay_tail: decay over this fraction of the run when lr_decay_steps is 0 (April recipe: 0.2)."""
    lr_end_frac: float = 0.0
    """LR at the end of a decay, as a fraction of the base LR."""
    l1_warmup_steps: int = 0
    """Linear lambda warm-up steps from 0 (Gated presets: 2000)."""
    l1_warmup_frac: float = 0.0
    """Lambda warm-up as a fraction of the run when l1_warmup_steps is 0 (April: 0.05, jumprelu_tanh: 1.0)."""
    adam_betas: tuple[float, float] = (0.0, 0.999)
    """Adam (beta1, beta2); the Gated paper and Bricken use (0, 0.999)."""
    adam_eps: float = 1e-8
    """Adam epsilon (TopK: 6.25e-10, Gao et al. 2024)."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0 disables)."""
    seed: int = 0
    """Seed of the trainer's own randomness (resampling draws)."""
    checkpoint_every: int = 0
    """Write a checkpoint every N steps (0: only at the end; needs out_dir)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (oldest pruned)."""
    log_every: int = 50
    """Steps between JSONL log records / progress-bar updates."""
    dead_window: int = 10_000_000
    """Tokens without firing after which a latent counts as dead (AuxK, logs)."""
    dense_threshold: float = 0.1
    """Firing frequency above which a latent counts as dense (the 0.01 rate is logged too)."""
    resample: bool = True
    """Resample dead latents at resample_steps for SAEs whose recipe uses resampling."""
    resample_steps: tuple[int, ...] = (25_000, 50_000, 75_000, 100_000)
    """Steps at which dead latents are resampled (Bricken et al. 2023)."""
    resample_ramp: int = 1000
    """Steps of the cosine LR ramp back to 1x after a resample."""
    norm_estimate_batches: int = 100
    """Batches consumed up front to estimate the input scale when an SAE normalises activations."""
    device: str = "auto"
    """cpu | cuda | cuda:N | auto (cuda when available)."""
    autocast_bf16: bool = False
    """Run SAE matmuls under bf16 autocast (master weights stay fp32; no GradScaler)."""

    def __post_init__(self) -> None:
        if self.total_steps < 1 or self.batch_size < 1:
            raise AlignlabError(f"total_steps and batch_size must be >= 1 (got {self.total_steps}, {self.batch_size})")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise AlignlabError(f"lr must be a positive number, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise AlignlabError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise AlignlabError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if self.grad_clip < 0 or self.dead_window < 1 or self.log_every < 1:
            raise AlignlabError("grad_clip must be >= 0 and dead_window, log_every >= 1")
        if not (0.0 <= self.lr_decay_frac <= 1.0 and 0.0 <= self.l1_warmup_frac <= 1.0):
            raise AlignlabError("lr_decay_frac and l1_warmup_frac must be in [0, 1]")

    @property
    def l1_warmup(self) -> int:
        return self.l1_warmup_steps or int(round(self.l1_warmup_frac * self.total_steps))

    @property
    def lr_decay(self) -> int:
        return self.lr_decay_steps or int(round(self.lr_decay_frac * self.total_steps))


TOPK_FAMILY = ("topk", "batchtopk", "matryoshka")


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


class _LossModule(torch.nn.Module):
    """Makes ``sae.loss`` the forward of a module so DistributedDataParallel can wrap it."""

    def __init__(self, sae: SAE) -> None:
        super().__init__()
        self.sae = sae

    def forward(self, x: Tensor, state: TrainState) -> LossOutput:
        return self.sae.loss(x, state)


class Slot:
    """One SAE's optimiser, schedules, dead-latent counters and RNG inside ``train_saes``."""

    def __init__(self, index: int, sae: SAE, cfg: TrainConfig, device: torch.device, distributed: bool) -> None:
        self.index, self.cfg_train, self.device = index, cfg, device
        self.sae = sae.to(device).train()
        n = sae.cfg.d_sae
        default_lr = default_topk_lr(n) if sae.cfg.architecture in TOPK_FAMILY else 3e-4
        self.lr = cfg.lr if cfg.lr is not None else default_lr
        self.opt = make_adam(self.sae, self.lr, tuple(cfg.adam_betas), cfg.adam_eps)
        self.gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + sae.cfg.seed)
        self.since_fired = torch.zeros(n, dtype=torch.long, device=device)  # tokens since the latent last fired
        self.fired_since_resample = torch.zeros(n, dtype=torch.bool, device=device)
        self.window_fires = torch.zeros(n, dtype=torch.float64, device=device)  # firing counts in the log window
        self.window_tokens = 0
        self.pending_resampled = 0
        self.resample_steps = ()
        if cfg.resample and sae.cfg.resample_dead:
            self.resample_steps = tuple(r for r in cfg.resample_steps if 0 < r < cfg.total_steps)
        self.annealer = None
        if sae.cfg.p_anneal:
            c = sae.cfg
            self.annealer = PAnnealer(c.p, c.p_end, c.anneal_start, cfg.total_steps, c.n_sparsity_updates, c.anneal_q, c.l1_coefficient)
        self.module = None
        self.world = 1
        if distributed:
            import torch.distributed as dist
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" and device.index is not None else None
            self.module = DistributedDataParallel(_LossModule(self.sae), device_ids=ids, broadcast_buffers=False)
            self.world = dist.get_world_size()

    def step(self, x: Tensor, step: int, want_log: bool) -> dict[str, Any] | None:
        cfg, sae = self.cfg_train, self.sae
        if step in self.resample_steps:
            self._resample(x)
        if self.annealer is not None:
            self.annealer.before_step(step)
        base_lam = self.annealer.lam if self.annealer is not None else sae.cfg.l1_coefficient
        lam = base_lam * l1_factor(step, cfg.l1_warmup)
        p = self.annealer.p_at(step) if self.annealer is not None else None
        lr = self.lr * lr_factor(step, cfg.total_steps, cfg.lr_warmup_steps, cfg.lr_decay, cfg.lr_schedule, cfg.lr_end_frac)
        if self.resample_steps:
            lr *= resample_lr_factor(step, self.resample_steps, cfg.resample_ramp)
        for group in self.opt.param_groups:
            group["lr"] = lr
        state = TrainState(step=step, l1_coefficient=lam, p=p, dead_mask=self.since_fired >= cfg.dead_window)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.autocast_bf16):
            out = self.module(x, state) if self.module is not None else sae.loss(x, state)
        if not bool(torch.isfinite(out.total.detach())):
            raise AlignlabError(f"SAE {self.index} loss became non-finite at step {step}; lower the learning rate or lambda")
        out.total.backward()
        project_decoder_grads_(sae)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(sae.parameters()), cfg.grad_clip, foreach=True)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        sae.after_step()
        self._sync_ema()
        self._track(out.feats.detach(), x.shape[0])
        if self.annealer is not None:
            acts = out.penalty_acts if out.penalty_acts is not None else out.feats
            self.annealer.record(step, acts)
        if not want_log:
            return None
        return self._record(out, x, step + 1, lr, lam, p)

    @torch.no_grad()
    def _track(self, feats: Tensor, rows: int) -> None:
        counts = torch.sign(feats).sum(0, dtype=torch.float32)  # [d_sae] firings; feats >= 0 (bool sums are slow)
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(counts)
        fired = counts > 0
        tokens = rows * self.world
        self.since_fired = torch.where(fired, torch.zeros_like(self.since_fired), self.since_fired + tokens)
        self.fired_since_resample |= fired
        self.window_fires += counts.double()
        self.window_tokens += tokens

    @torch.no_grad()
    def _sync_ema(self) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        for name in getattr(self.sae, "ema_buffers", ()):
            buf = getattr(self.sae, name)
            dist.all_reduce(buf)
            buf.div_(self.world)

    @torch.no_grad()
    def _resample(self, x: Tensor) -> None:
        dead = ~self.fired_since_resample
        x_hat = self.sae(x)
        n = resample_dead_(self.sae, self.opt, dead, x, x_hat, self.gen)
        if self.world > 1:
            import torch.distributed as dist

            for p in self.sae.parameters():
                dist.broadcast(p.data, src=0)
        self.since_fired[dead] = 0
        self.fired_since_resample.zero_()
        self.pending_resampled += n

    @torch.no_grad()
    def _record(self, out: LossOutput, x: Tensor, step: int, lr: float, lam: float, p: float | None) -> dict[str, Any]:
        feats, x_hat = out.feats, out.x_hat.float()
        freq = self.window_fires.double() / max(self.window_tokens, 1)
        hist = torch.histc(torch.log10(freq + 1e-10).float(), bins=10, min=-10.0, max=0.0)
        rec = {
            "sae": self.index,
            "step": step,
            "tokens": step * x.shape[0] * self.world,
            "loss": float(out.total),
            **{k: float(v) for k, v in out.terms.items()},
            "l0": float(torch.sign(feats).sum(-1, dtype=torch.float32).mean()),
            "fvu": float((x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-30)),
            "lr": lr,
            "lambda": lam,
            "p": p if p is not None else self.sae.cfg.p,
            "dead_frac": float((self.since_fired >= self.cfg_train.dead_window).float().mean()),
            "dense_frac": float((freq > self.cfg_train.dense_threshold).float().mean()),
            "dense_frac_0.01": float((freq > 0.01).float().mean()),
            "log10_density_hist": [int(v) for v in hist.tolist()],
            "resampled": self.pending_resampled,
        }
        self.window_fires.zero_()
        self.window_tokens = 0
        self.pending_resampled = 0
        return rec

    def state_dict(self) -> dict[str, Any]:
        cpu = {k: v.detach().cpu().clone() for k, v in self.sae.state_dict().items()}
        return {
            "sae_config": self.sae.cfg.to_dict(),
            "sae_state": cpu,
            "opt": self.opt.state_dict(),
            "gen": self.gen.get_state(),
            "since_fired": self.since_fired.cpu(),
            "fired_since_resample": self.fired_since_resample.cpu(),
            "window_fires": self.window_fires.cpu(),
            "window_tokens": self.window_tokens,
            "pending_resampled": self.pending_resampled,
            "annealer": self.annealer.state_dict() if self.annealer is not None else None,
        }

    def load_state_dict(self, st: dict[str, Any]) -> None:
        from alignlab.sae.base import SAEConfig

        self.sae.cfg = SAEConfig.from_dict(st["sae_config"])
        self.sae.load_state_dict(st["sae_state"])
        self.opt.load_state_dict(st["opt"])
        self.gen.set_state(st["gen"])
        self.since_fired = st["since_fired"].to(self.device)
        self.fired_since_resample = st["fired_since_resample"].to(self.device)
        self.window_fires = st["window_fires"].to(self.device)
        self.window_tokens = int(st["window_tokens"])
        self.pending_resampled = int(st["pending_resampled"])
        if self.annealer is not None and st["annealer"] is not None:
            self.annealer.load_state_dict(st["annealer"])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AlignlabError(f"device {name!r} requested but CUDA is not available; pass --device cpu")
    return dev


def _dist() -> tuple[bool, int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def _check_batch(x: Any, step: int, d_in: int) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] == 0:
        raise AlignlabError(f"batch at step {step} must be a non-empty [batch, d_in] tensor, got {getattr(x, 'shape', type(x))}")
    if x.shape[1] != d_in:
        raise AlignlabError(f"batch at step {step} has width {x.shape[1]} but the SAEs expect d_in={d_in}")
    if not bool(torch.isfinite(x).all()):
        raise AlignlabError(f"batch at step {step} contains NaN/inf activations; check the activation source")
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
    """b_dec from the first batch (mean or geometric median), only for SAEs whose b_dec is still all zeros."""
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
) -> list[TrainResult]:
    """Train ``saes`` (in place) on one stream of [batch_size, d_in] fp32 batches; see the module docstring.

    With ``out_dir``: JSONL log at out_dir/train_log.jsonl, checkpoints under out_dir/checkpoints, and each
    final SAE in SAELens format at out_dir/sae_<i>. ``resume=True`` continues from the latest checkpoint,
    skipping the batches already consumed (``batches.skip(n)`` when the source offers it).
    """
    if not saes:
        raise AlignlabError("train_saes needs at least one SAE")
    d_in = saes[0].cfg.d_in
    if any(s.cfg.d_in != d_in for s in saes):
        raise AlignlabError("all SAEs trained from one activation stream must share d_in")
    device = resolve_device(cfg.device)
    distributed, rank, world = _dist()
    out = Path(out_dir) if out_dir is not None else None
    slots = [Slot(i, s, cfg, device, distributed) for i, s in enumerate(saes)]
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
    while step < cfg.total_steps:
        try:
            raw = next(it)
        except StopIteration:
            break
        consumed += 1
        x = _check_batch(raw, step, d_in).to(device, non_blocking=True)
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
            write_training_checkpoint(out, step, consumed, slots, cfg, rank, distributed)
    if bar is not None:
        bar.close()
    if out is not None:
        write_training_checkpoint(out, step, consumed, slots, cfg, rank, distributed)
    return _finish(slots, out, step, cfg, world, last, log_path, rank)


def _finish(slots, out, step, cfg, world, last, log_path, rank) -> list[TrainResult]:
    results = []
    for s in slots:
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
