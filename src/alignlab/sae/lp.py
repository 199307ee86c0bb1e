"""L_p-penalised ReLU SAE (spec §2.3): sqrt-L1 (Riggs Smith, Mar 2024) and p-annealing
(Karvonen et al., arXiv 2408.00113 §4.3).

Forward pass as the standard SAE; the penalty family is explicit:

- ``penalty="lp"``:      lambda * sum_i w_i f_i^p            (p = 1/2 is the sqrt penalty)
- ``penalty="lp_norm"``: lambda * (sum_i |w_i f_i|^p)^(1/p)  (SAELens ``lp_norm`` semantics)

with w_i = ||d_i|| when ``weight_by_decoder_norm`` and 1 otherwise. The optional epsilon-smoothed form
(f + eps)^p - eps^p bounds the gradient by p eps^(p-1) (numerical practice, not from a paper).
p-annealing (p from ``p`` down to ``p_end``) is driven by the trainer through ``TrainState.p`` and the
lambda rescale of ``schedules.PAnnealer``.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from alignlab.errors import AlignlabError
from alignlab.sae.arch_table import register
from alignlab.sae.base import SAEConfig, TrainState
from alignlab.sae.standard import StandardSAE

PENALTIES = ("lp", "lp_norm")

_BRICKEN_LIKE = {
    "weight_by_decoder_norm": False,
    "unit_norm_decoder": True,
    "resample_dead": True,
    "apply_b_dec_to_input": True,
    "init_decoder_norm": 1.0,
    "normalize_activations": "none",
}


def lp_penalty(f: Tensor, p: float, cfg: SAEConfig, weights: Tensor | None = None) -> Tensor:
    """Per-token L_p penalty without lambda, averaged over tokens (scalar). ``f`` >= 0 ([B, d_sae])."""
    g = f if weights is None else f * weights  # lp_norm weights inside |.|, lp outside (below)
    if cfg.penalty == "lp_norm":
        return _pow_safe(g, p, 0.0).sum(-1).pow(1.0 / p).mean() if p != 1.0 else g.abs().sum(-1).mean()
    if p == 1.0 and cfg.lp_eps == 0.0:
        return g.sum(-1).mean()
    fp = _PowNonneg.apply(f, p) if cfg.lp_eps == 0.0 else _pow_safe(f, p, cfg.lp_eps)
    if weights is not None:
        fp = fp * weights
    return fp.sum(-1).mean()


class _PowNonneg(torch.autograd.Function):
    """f^p for f >= 0 with gradient p f^(p-1) on f > 0 and exactly 0 at f = 0 (never NaN), one pass each way."""

    @staticmethod
    def forward(ctx, f: Tensor, p: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(f)
        ctx.p = p
        return f.pow(p)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        (f,) = ctx.saved_tensors
        d = f.pow(ctx.p - 1.0).mul_(g).mul_(ctx.p)  # inf at f = 0 ...
        return torch.ops.aten.threshold_backward(d, f, 0), None  # ... selected away (not multiplied) there


def _pow_safe(f: Tensor, p: float, eps: float) -> Tensor:
    """|f|^p (or (|f| + eps)^p - eps^p) with a zero, not NaN, gradient at f = 0 for p < 1."""
    a = f.abs()
    if eps > 0.0:
        return (a + eps).pow(p) - eps**p
    pos = a > 0
    safe = a.masked_fill(~pos, 1.0)
    return safe.pow(p).masked_fill(~pos, 0.0)


@register("lp")
class LpSAE(StandardSAE):
    """Standard ReLU SAE with an L_p penalty; recipes ``anneal`` (default) and ``fixed``."""

    default_recipe = "anneal"
    recipes = {"anneal": {**_BRICKEN_LIKE, "p_anneal": True}, "fixed": {**_BRICKEN_LIKE, "p_anneal": False}}

    @classmethod
    def validate(cls, cfg: SAEConfig) -> None:
        validate_lp(cfg)

    def penalty(self, f: Tensor, state: TrainState) -> Tensor:
        w = self.decoder_norms() if self.cfg.weight_by_decoder_norm else None
        return lp_penalty(f, state.p_now(self.cfg), self.cfg, w)


def validate_lp(cfg: SAEConfig) -> None:
    """Rules of spec §2.3 shared by lp and gated/anneal."""
    if cfg.penalty not in PENALTIES:
        raise AlignlabError(f"penalty must be one of {PENALTIES}, got {cfg.penalty!r}")
    if not 0.0 < cfg.p <= 1.0 or not 0.0 < cfg.p_end <= 1.0:
        raise AlignlabError(f"p and p_end must be in (0, 1], got p={cfg.p}, p_end={cfg.p_end}")
    if cfg.lp_eps < 0:
        raise AlignlabError(f"lp_eps must be >= 0, got {cfg.lp_eps}")
    if cfg.p_anneal and (cfg.n_sparsity_updates < 1 or cfg.anneal_q < 1):
        raise AlignlabError("n_sparsity_updates and anneal_q must be >= 1 when p-annealing is on")
    if not 0.0 <= cfg.anneal_start_frac <= 1.0 or (cfg.anneal_start is not None and cfg.anneal_start < 0):
        raise AlignlabError(f"anneal_start_frac must be in [0, 1] and anneal_start >= 0 "
                            f"(got {cfg.anneal_start_frac}, {cfg.anneal_start})")
    if cfg.p < 1.0 and not cfg.p_anneal:
        if not cfg.allow_fixed_p:
            raise AlignlabError(
                f"fixed p={cfg.p} < 1 is unstable (spec §2.3); use recipe 'anneal' or set allow_fixed_p=true"
            )
        warnings.warn(f"training with a fixed p={cfg.p} < 1 without annealing (allow_fixed_p)", stacklevel=3)
