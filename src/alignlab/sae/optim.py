"""Adam with the projected (constrained) step for unit-norm decoders, and dead-latent resampling.

Projected Adam (Bricken et al. 2023; dictionary_learning ``ConstrainedAdam``; spec §2.1): (i) remove from each
decoder row's gradient its component along that row, (ii) take the Adam step, (iii) renormalise the rows
(``SAE.after_step``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from alignlab.sae.base import SAE


def make_adam(sae: SAE, lr: float, betas: tuple[float, float], eps: float) -> torch.optim.Adam:
    """fp32 Adam over all SAE parameters; the fused kernel where this torch build offers it (CPU and CUDA)."""
    params = [p for p in sae.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, foreach=True)


@torch.no_grad()
def project_decoder_grads_(sae: SAE) -> None:
    """Remove from each constrained row's gradient its component along the row (rows of W_dec = d_i)."""
    for w in sae.constrained_params:
        if w.grad is None:
            continue
        coef = torch.linalg.vecdot(w.grad, w, dim=1) / torch.linalg.vecdot(w, w, dim=1).clamp_min(1e-12)  # [d_sae]
        w.grad.addcmul_(coef[:, None], w, value=-1.0)  # in place, no [d_sae, d_in] temporary


@torch.no_grad()
def reset_adam_slices_(opt: torch.optim.Optimizer, param: Tensor, idx: Tensor, dim: int) -> None:
    """Zero both Adam moments of ``param`` at ``idx`` along ``dim`` (after resampling those latents)."""
    state = opt.state.get(param)
    if not state:
        return
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key].index_fill_(dim, idx.to(state[key].device), 0.0)


def default_topk_lr(d_sae: int) -> float:
    """2e-4 / sqrt(n / 2^14): the width-scaling rule of sparsify and dictionary_learning (spec §2.4)."""
    return 2e-4 / math.sqrt(d_sae / 2**14)


@torch.no_grad()
def resample_dead_(
    sae: SAE,
    opt: torch.optim.Optimizer,
    dead: Tensor,
    x: Tensor,
    x_hat: Tensor,
    generator: torch.Generator,
) -> int:
    """Bricken "Neuron Resampling" on the latents in ``dead`` ([d_sae] bool); returns how many were resampled.

    Inputs are drawn with probability proportional to their squared reconstruction loss; each dead decoder
    row becomes a normalised drawn input, its encoder column the same direction scaled to 0.2 x the mean
    norm of live encoder columns, its encoder bias(es) 0, and Adam moments of every modified slice are reset.
    """
    idx = dead.nonzero().flatten()
    n = int(idx.numel())
    if n == 0:
        return 0
    losses = (x - x_hat).float().pow(2).sum(-1)  # [B]
    if float(losses.sum()) <= 0:
        losses = torch.ones_like(losses)
    pick = torch.multinomial(losses.cpu(), n, replacement=n > losses.numel(), generator=generator)
    v = x[pick.to(x.device)].float()  # [n_dead, d_in]
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    alive = ~dead
    enc_norms = sae.W_enc.norm(dim=0)  # [d_sae], column i = encoder row of latent i
    alive_norm = float(enc_norms[alive].mean()) if bool(alive.any()) else 1.0
    sae.W_dec[idx] = v.to(sae.W_dec.dtype)
    sae.W_enc[:, idx] = (v * 0.2 * alive_norm).t().to(sae.W_enc.dtype)
    reset_adam_slices_(opt, sae.W_dec, idx, 0)
    reset_adam_slices_(opt, sae.W_enc, idx, 1)
    for name in ("b_enc", "b_gate", "b_mag", "r_mag"):
        p = getattr(sae, name, None)
        if isinstance(p, torch.nn.Parameter):
            p[idx] = 0.0
            reset_adam_slices_(opt, p, idx, 0)
    return n
