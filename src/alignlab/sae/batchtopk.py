"""BatchTopK SAE (Bussmann, Leask, Nanda, arXiv 2412.06410; spec §2.5).

Training: keep the B*k largest ReLU pre-activations of the flattened [B, d_sae] batch (L0 averages k but
varies per token); loss and AuxK as TopK. Inference (``eval()`` mode): one global threshold theta, i.e. a
JumpReLU with the same theta for every latent: f = ReLU(z) * H(z - theta). theta is an EMA of the smallest
positive selected activation: ``saelens`` (rate 0.01, float64, from step 0; the default) or
``dictionary_learning`` (beta 0.999 from step 1000, first value taken as is). Saved as a ``jumprelu`` SAE.
Under DDP (the trainer sets ``global_selection``) the B*k entries are chosen over the global batch through one
gather of candidates (``distributed.global_batch_topk``), so every rank keeps what a single process would keep
and theta sees the global minimum; the trainer still all-reduces theta (mean) as a guard.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from alignlab.errors import AlignlabError
from alignlab.sae.arch_table import register
from alignlab.sae.base import LossOutput, SAEConfig, TrainState, recon_error
from alignlab.sae.topk import _TopKFamily

ESTIMATORS = ("saelens", "dictionary_learning")


def batch_topk_select(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(flat_idx, vals) of the B*k largest ReLU(pre) entries over the flattened [B, d_sae] batch.

    Fast exact path: per-row top-4k candidates, then the global top B*k among them. It is exact whenever
    every row's smallest candidate lies strictly below the selected minimum (no row could contribute more);
    otherwise it falls back to one top-k over the whole flattened batch.
    """
    acts = torch.relu(pre)
    rows, n = acts.shape
    m = min(rows * k, acts.numel())
    kk = min(n, 4 * k)
    if kk < n:
        cand, cidx = acts.topk(kk, dim=-1, sorted=False)  # [B, kk]
        vals, pos = cand.flatten().topk(m, sorted=False)
        if bool((cand.min(-1).values < vals.min()).all()):
            row = torch.div(pos, kk, rounding_mode="floor")
            return row * n + cidx.flatten()[pos], vals
    vals, idx = acts.flatten().topk(m, sorted=False)
    return idx, vals


@register("batchtopk")
class BatchTopKSAE(_TopKFamily):
    saelens_architecture = "jumprelu"
    ema_buffers = ("threshold",)

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        init = 0.0 if cfg.threshold_estimator == "saelens" else -1.0
        self.register_buffer("threshold", torch.tensor(init, dtype=torch.float64))
        self.global_selection = False  # set by the trainer under DDP: select over all ranks' rows

    @classmethod
    def validate(cls, cfg: SAEConfig) -> None:
        super().validate(cfg)
        if cfg.threshold_estimator not in ESTIMATORS:
            raise AlignlabError(f"threshold_estimator must be one of {ESTIMATORS}, got {cfg.threshold_estimator!r}")

    def encode(self, x: Tensor) -> Tensor:
        pre = self.pre_acts(x)
        if self.training:
            idx, vals = batch_topk_select(pre, self.cfg.k)
            return torch.zeros_like(pre).flatten().scatter(0, idx, vals).view_as(pre)
        return self._threshold_acts(pre)

    def _threshold_acts(self, pre: Tensor) -> Tensor:
        theta = self.threshold.to(pre.dtype)
        return torch.relu(pre) * (pre > theta).to(pre.dtype)

    @torch.no_grad()
    def update_threshold_(self, vals: Tensor, step: int, total_steps: int | None = None) -> None:
        """EMA of the smallest positive selected activation (spec §2.5); ``vals`` may be that minimum alone.

        ``saelens`` estimator, rate 0.01, with two corrections (issue 14: after a short run SAELens's EMA from
        theta = 0 sits at 1 - 0.99^step of its target, and held-out L0 was 42.5 for k = 32):
        the first 100 steps take the running mean of the per-batch minima instead of pulling towards 0, and
        the final 10% of ``total_steps`` (at most 1,000 steps) restart it as a plain mean of the per-batch
        minima, the paper's estimate, so the saved theta describes the final weights and not a lagging average.
        """
        pos = vals[vals > 0]
        if self.cfg.threshold_estimator == "saelens":
            if pos.numel():
                tail = None if total_steps is None else total_steps - max(1, min(1000, total_steps // 10))
                lr = 1.0 / (step - tail + 1) if tail is not None and step >= tail else max(0.01, 1.0 / (step + 1))
                self.threshold.mul_(1 - lr).add_(lr * pos.min().to(torch.float64))
            return
        if step < 1000:
            return
        m = pos.min().to(self.threshold.dtype) if pos.numel() else torch.zeros_like(self.threshold)
        if self.threshold < 0:
            self.threshold.copy_(m)
        else:
            self.threshold.mul_(0.999).add_(0.001 * m)

    def select(self, x: Tensor, state: TrainState) -> tuple[Tensor, Tensor]:
        """(pre, z), both [B, d_sae]: batch selection, theta EMA updated in training mode."""
        pre = self.pre_acts(x)
        if self.global_selection and self.training:
            from alignlab.sae.distributed import global_batch_topk

            idx, vals, theta_sample = global_batch_topk(torch.relu(pre), self.cfg.k)
            self.update_threshold_(theta_sample.detach().reshape(1), state.step, state.total_steps)
        else:
            idx, vals = batch_topk_select(pre, self.cfg.k)
            if self.training:
                self.update_threshold_(vals.detach(), state.step, state.total_steps)
        z = torch.zeros_like(pre).flatten().scatter(0, idx, vals).view_as(pre)
        return pre, z

    def loss(self, x: Tensor, state: TrainState) -> LossOutput:
        pre, z = self.select(x, state)
        x_hat = self.decode(z)  # ragged L0 per token: dense decode of the scattered codes
        mse = recon_error(x, x_hat, self.cfg)
        return self._finish(x, pre, z.detach(), x_hat, state, {"mse": mse})

    # ----- SAELens: written as jumprelu with a constant threshold -----
    def saelens_tensors(self) -> dict[str, Tensor]:
        sd = {k: self.state_dict()[k].detach().clone() for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
        sd["threshold"] = self.threshold.clamp_min(0.0).to(self.W_enc.dtype).expand(self.cfg.d_sae).clone()
        return sd

    def load_saelens_tensors(self, tensors: dict[str, Tensor]) -> None:
        t = dict(tensors)
        thr = t.pop("threshold")
        t["threshold"] = thr.max().to(torch.float64)
        self.load_state_dict(t, strict=True)

    def saelens_cfg_extra(self) -> dict[str, Any]:
        return {}

