"""L_p stability traces (issue 17 item 4; the sqrt-L1 post and the toy-model instability comment, spec §2.3).

A standard-recipe SAE with a fixed L_p penalty (p = 1, 0.5, 0.2), with and without the epsilon-smoothed form
(f + eps)^p - eps^p, trains on the study's stream in a plain loop that records, every step, the loss and the
gradient norm before clipping. A step whose loss or gradient is not finite is counted and skipped (no update),
where ``train_saes`` would stop the run. The trainer's safeguards are otherwise the same (projected Adam, unit
decoder rows, gradient clip 1.0, LR warm-up).

For p < 1 the coefficient is matched to the L1 run's at initialisation with the p-annealing rule
(Karvonen et al., arXiv 2408.00113 §4.3): lambda_p = lambda_1 * sum f / sum f^p on the first batch, so every
run starts with the same penalty strength and differences come from the shape of the penalty alone.

A latent "dies" when it fired in the first 10% of the steps and never in the last 25%.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from alignlab.sae.base import TrainState
from alignlab.sae.optim import make_adam, project_decoder_grads_
from alignlab.sae.schedules import lr_factor


@dataclass(frozen=True)
class StabilityRun:
    p: float
    eps: float

    @property
    def name(self) -> str:
        return f"p={self.p:g}" + (f"_eps={self.eps:g}" if self.eps else "")


def _lp_sae(d: int, n: int, p: float, eps: float, lam: float, seed: int):
    from alignlab.sae import build_sae, preset_config

    with warnings.catch_warnings():  # a fixed p < 1 warns by design; here it is the object of study
        warnings.simplefilter("ignore", UserWarning)
        cfg = preset_config(
            "lp",
            d,
            n,
            recipe="fixed",
            p=p,
            lp_eps=eps,
            allow_fixed_p=True,
            l1_coefficient=lam,
            normalize_activations="none",
            seed=seed,
        )
        return build_sae(cfg)


@torch.no_grad()
def matched_lambda(sae: Any, x: Tensor, lam_l1: float, p: float, eps: float) -> float:
    """lambda for the L_p penalty with the strength of lambda_l1 * sum f on batch ``x`` at initialisation."""
    f = sae.encode(x).double()
    num = float(f.sum())
    den = float(((f + eps).pow(p) - eps**p).sum()) if eps else float(f[f > 0].pow(p).sum())
    return lam_l1 * num / den if den > 0 else lam_l1


def run_stability(
    run: StabilityRun,
    batches: Any,
    d: int,
    n: int,
    steps: int,
    lam_l1: float,
    lr: float,
    seed: int,
    heldout: Tensor,
) -> dict[str, Any]:
    """Train one L_p SAE for ``steps`` and return its traces and counts (JSON-ready)."""
    from alignlab.sae.study_train import heldout_metrics

    torch.manual_seed(seed)
    it = iter(batches)
    first = next(it)
    probe = _lp_sae(d, n, run.p, run.eps, lam_l1, seed)
    lam = matched_lambda(probe, first, lam_l1, run.p, run.eps) if run.p != 1.0 else lam_l1
    sae = _lp_sae(d, n, run.p, run.eps, lam, seed).train()
    opt = make_adam(sae, lr, (0.0, 0.999), 1e-8)
    early = torch.zeros(n, dtype=torch.bool)
    late = torch.zeros(n, dtype=torch.bool)
    losses: list[float | None] = []
    grads: list[float | None] = []
    nonfinite = 0
    warm = max(1, steps // 10)
    x = first
    for step in range(steps):
        if step:
            x = next(it)
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor(step, steps, warm, 0, "constant", 0.0)
        out = sae.loss(x, TrainState(step=step, l1_coefficient=lam, p=run.p))
        out.total.backward()
        project_decoder_grads_(sae)
        gnorm = float(torch.nn.utils.clip_grad_norm_(list(sae.parameters()), 1.0))
        loss = float(out.total.detach())
        fired = (out.feats.detach() > 0).any(0)
        if not (math.isfinite(loss) and math.isfinite(gnorm)):
            nonfinite += 1  # skipped: no update from a non-finite step
            opt.zero_grad(set_to_none=True)
        else:
            opt.step()
            opt.zero_grad(set_to_none=True)
            sae.after_step()
        if step < max(1, steps // 10):
            early |= fired
        if step >= steps - max(1, steps // 4):
            late |= fired
        losses.append(loss if math.isfinite(loss) else None)
        grads.append(gnorm if math.isfinite(gnorm) else None)
    finite_grads = [g for g in grads if g is not None]
    return {
        "name": run.name,
        "p": run.p,
        "eps": run.eps,
        "lambda": lam,
        "steps": steps,
        "nonfinite_steps": nonfinite,
        "died": int((early & ~late).sum()),
        "alive_early": int(early.sum()),
        "alive_late": int(late.sum()),
        "max_grad_norm": max(finite_grads) if finite_grads else None,
        "median_grad_norm": float(torch.tensor(finite_grads).median()) if finite_grads else None,
        "clipped_frac": sum(g > 1.0 for g in finite_grads) / max(len(finite_grads), 1),
        "loss_trace": losses,
        "grad_norm_trace": grads,
        "heldout": heldout_metrics(sae, heldout),
    }
