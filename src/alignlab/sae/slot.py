"""One SAE's training state inside ``train_saes``: optimiser, schedules, dead-latent counters, RNG, DDP wrapper."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from alignlab.sae.base import SAE, LossOutput, TrainState
from alignlab.sae.distributed import all_gather_rows, all_reduce_sum
from alignlab.sae.finite import FiniteGuard
from alignlab.sae.optim import default_topk_lr, make_adam, project_decoder_grads_, resample_dead_
from alignlab.sae.schedules import PAnnealer, l1_factor, lr_factor, resample_lr_factor
from alignlab.sae.train_config import TOPK_FAMILY, TrainConfig


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
            start = c.anneal_start if c.anneal_start is not None else int(round(c.anneal_start_frac * cfg.total_steps))
            self.annealer = PAnnealer(c.p, c.p_end, start, cfg.total_steps, c.n_sparsity_updates, c.anneal_q, c.l1_coefficient)
        if device.type == "cuda" and sae.cfg.architecture == "gated":
            from alignlab.sae.gated import compile_gated_kernels, reset_gated_kernels

            if cfg.compile_kernels:
                compile_gated_kernels(device.type)
            else:
                reset_gated_kernels(device.type)
        self.guard = FiniteGuard(device, f"SAE {index} loss became non-finite at step {{step}}; "
                                 "lower the learning rate or lambda")
        self.module = None
        self.world = 1
        if distributed:
            import torch.distributed as dist
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" and device.index is not None else None
            self.module = DistributedDataParallel(_LossModule(self.sae), device_ids=ids, broadcast_buffers=False)
            self.world = dist.get_world_size()
            if hasattr(self.sae, "global_selection"):  # BatchTopK family: select over the global batch
                self.sae.global_selection = self.world > 1

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
        state = TrainState(step=step, l1_coefficient=lam, p=p, dead_mask=self.since_fired >= cfg.dead_window,
                           total_steps=cfg.total_steps)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.autocast_bf16):
            out = self.module(x, state) if self.module is not None else sae.loss(x, state)
        self.guard.check(torch.isfinite(out.total.detach()), step)  # no GPU sync (finite.py)
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
            self.annealer.record(step, acts, all_reduce_sum if self.world > 1 else None)
        if not want_log:
            return None
        return self._record(out, x, step + 1, lr, lam, p)

    @torch.no_grad()
    def _track(self, feats: Tensor, rows: int) -> None:
        if feats.device.type == "cpu":  # [d_sae] firings; feats >= 0 (bool sums are slow on CPU)
            counts = torch.sign(feats).sum(0, dtype=torch.float32)
        else:  # one pass, no [B, d_sae] temporary
            counts = torch.count_nonzero(feats, dim=0).float()
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
        x = all_gather_rows(x)  # under DDP: draw from the global batch, as one process would
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
