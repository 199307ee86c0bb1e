"""JumpReLU SAE (Rajamanoharan et al., arXiv 2407.14435; spec §2.6).

z = W_enc x + b_enc;  f = z * H(z - theta)  (theta >= 0 per latent);  L = ||x - x_hat||^2 + lambda ||f||_0.

What Adam trains (``threshold_param``): ``linear`` (default) trains theta itself and projects it to >= 0 after
every step, as SAELens (>= 6, its issue #494) and dictionary_learning do; ``log`` trains log theta as the
paper's pseudo-code does. Adam's step is at most ~lr, so log theta changes theta by a factor of at most ~e^lr
per step: from theta0 = 0.001 to the pre-activation scale of normalised inputs (~1/sqrt(d)) takes ~10^4 steps
at lr 3e-4, and a short run stays a ReLU. Both give the same forward and the same pseudo-derivatives w.r.t. theta.

Straight-through pseudo-derivatives with the rectangle kernel K(u) = 1[-1/2 < u < 1/2], bandwidth eps:
  df_i/dtheta_i := -(theta_i / eps) K((z_i - theta_i) / eps)
  dH(z_i - theta_i)/dtheta_i := -(1 / eps) K((z_i - theta_i) / eps)
w.r.t. z, f passes gradient H(z - theta) and the L0 term passes none.

Recipes: ``paper`` (eps = theta0 = 0.001, App. I), ``saelens`` (eps 0.05, theta0 0.01), ``tanh``
(Anthropic Circuits Updates Jan 2025: lambda sum tanh(c f_i ||d_i||), pre-activation loss
lambda_P sum ReLU(theta_i - z_i) ||d_i|| on dead latents, free decoder norms, inputs scaled to sqrt(d)).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from alignlab.errors import AlignlabError
from alignlab.sae.arch_table import register
from alignlab.sae.base import SAE, LossOutput, SAEConfig, TrainState, centered_linear, recon_error

THRESHOLD_PARAMS = ("linear", "log")
_L0 = {
    "threshold_param": "linear",
    "weight_by_decoder_norm": False,
    "unit_norm_decoder": True,
    "resample_dead": False,
    "apply_b_dec_to_input": False,
    "init_decoder_norm": 1.0,
    "normalize_activations": "none",
}
JUMPRELU_RECIPES = {
    "paper": {**_L0, "bandwidth": 0.001, "threshold_init": 0.001},
    "saelens": {**_L0, "bandwidth": 0.05, "threshold_init": 0.01},
    "tanh": {
        **_L0,
        "weight_by_decoder_norm": True,
        "unit_norm_decoder": False,
        "normalize_activations": "expected_average_only_in",
        "bandwidth": 0.05,
        "threshold_init": 0.01,
    },
}


def _kernel(z: Tensor, theta: Tensor, eps: float) -> Tensor:
    """K((z - theta) / eps) with K the rectangle kernel 1[-1/2 < u < 1/2]."""
    return ((z - theta).abs() < eps / 2).to(z.dtype)


class JumpReLUFn(torch.autograd.Function):
    """f = z * H(z - theta) with the STE of arXiv 2407.14435 eq. 11."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        g_z = g * (z > theta).to(g.dtype)
        g_theta = (g * (-(theta / eps) * _kernel(z, theta, eps))).sum(0)
        return g_z, g_theta, None


class StepFn(torch.autograd.Function):
    """H(z - theta) with zero gradient to z and -(1/eps) K((z - theta)/eps) to theta."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        g_theta = (g * (-(1.0 / eps) * _kernel(z, theta, eps))).sum(0)
        return torch.zeros_like(z), g_theta, None


class JumpReLUL0Fn(torch.autograd.Function):
    """Fused (f, ||f||_0 per token) = (JumpReLUFn, sum_i StepFn) with the same pseudo-derivatives, one pass
    over [B, d_sae] each way (the L0 recipes' hot path; the two reference functions above define it)."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, eps: float) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        diff = z - theta  # [B, d_sae]
        f = torch.ops.aten.threshold_backward(z, diff, 0)  # z * H(z - theta), strict
        l0 = torch.sign(torch.relu(diff)).sum(-1)  # [B]
        ctx.save_for_backward(diff, theta)
        ctx.eps = eps
        return f, l0

    @staticmethod
    def backward(ctx, g_f: Tensor, g_l0: Tensor):  # type: ignore[override]
        diff, theta = ctx.saved_tensors
        eps = ctx.eps
        g_z = torch.ops.aten.threshold_backward(g_f, diff, 0)  # H(z - theta); L0 passes none to z
        # d/dtheta: -(theta/eps) K g_f - (1/eps) K g_l0, K = 1[|z - theta| < eps/2]
        coef = torch.addcmul((-1.0 / eps) * g_l0[:, None], g_f, theta, value=-1.0 / eps)  # [B, d_sae]
        inside = (eps / 2) - diff.abs()
        g_theta = torch.ops.aten.threshold_backward(coef, inside, 0).sum(0)
        return g_z, g_theta, None


@register("jumprelu")
class JumpReLUSAE(SAE):
    saelens_architecture = "jumprelu"

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.b_enc = torch.nn.Parameter(torch.zeros(cfg.d_sae))
        theta0 = torch.full((cfg.d_sae,), float(cfg.threshold_init))
        if cfg.threshold_param == "log":
            self.log_threshold = torch.nn.Parameter(theta0.log())
        else:
            self.threshold = torch.nn.Parameter(theta0)  # the SAELens tensor itself
        self.init_weights_()

    @classmethod
    def resolve(cls, cfg: SAEConfig) -> dict[str, Any]:
        recipe = cfg.recipe or "paper"
        if recipe not in JUMPRELU_RECIPES:
            raise AlignlabError(
                f"unknown recipe {recipe!r} for jumprelu; choose one of {', '.join(JUMPRELU_RECIPES)}"
            )
        object.__setattr__(cfg, "recipe", recipe)
        return dict(JUMPRELU_RECIPES[recipe])

    @classmethod
    def validate(cls, cfg: SAEConfig) -> None:
        if not (cfg.bandwidth > 0 and cfg.threshold_init > 0):
            raise AlignlabError(
                f"jumprelu needs bandwidth > 0 and threshold_init > 0 (got {cfg.bandwidth}, {cfg.threshold_init})"
            )
        if cfg.threshold_param not in THRESHOLD_PARAMS:
            raise AlignlabError(f"threshold_param must be one of {THRESHOLD_PARAMS}, got {cfg.threshold_param!r}")

    @property
    def theta(self) -> Tensor:  # [d_sae], differentiable w.r.t. the trained parameter
        return self.log_threshold.exp() if self.cfg.threshold_param == "log" else self.threshold

    @torch.no_grad()
    def after_step(self) -> None:
        """Renormalise the decoder (recipe permitting) and hold a linear theta at >= 0: below 0 the gate would
        pass negative pre-activations. A projection, not a clamp in the graph, so theta = 0 still learns."""
        super().after_step()
        if self.cfg.threshold_param != "log":
            self.threshold.clamp_(min=0.0)

    def pre_acts(self, x: Tensor) -> Tensor:
        return centered_linear(x, self.b_dec_for_input(), self.W_enc, self.b_enc)

    def encode(self, x: Tensor) -> Tensor:
        z = self.pre_acts(x)
        return JumpReLUFn.apply(z, self.theta, self.cfg.bandwidth)

    def loss(self, x: Tensor, state: TrainState) -> LossOutput:
        z = self.pre_acts(x)  # [B, d_sae]
        theta = self.theta
        terms: dict[str, Tensor] = {}
        lam = state.lam(self.cfg)
        if self.cfg.recipe == "tanh":
            f = JumpReLUFn.apply(z, theta, self.cfg.bandwidth)
            x_hat = self.decode(f)
            mse = recon_error(x, x_hat, self.cfg)
            terms["mse"] = mse
            norms = self.decoder_norms()
            sparsity = torch.tanh(self.cfg.tanh_scale * f * norms).sum(-1).mean()
            total = mse + lam * sparsity
            if state.dead_mask is not None and bool(state.dead_mask.any()):
                pre = (torch.relu(theta - z) * norms * state.dead_mask.to(z.dtype)).sum(-1).mean()
                terms["pre_act"] = pre
                total = total + self.cfg.pre_act_coefficient * pre
        else:
            f, l0 = JumpReLUL0Fn.apply(z, theta, self.cfg.bandwidth)  # f and ||f||_0 with the STE
            x_hat = self.decode(f)
            mse = recon_error(x, x_hat, self.cfg)
            terms["mse"] = mse
            sparsity = l0.mean()
            total = mse + lam * sparsity
        terms["sparsity"] = sparsity
        return LossOutput(total, terms, f, x_hat)

    # SAELens stores theta as ``threshold``; the log parameterisation converts on save and load
    def saelens_tensors(self) -> dict[str, Tensor]:
        sd = {k: v.detach().clone() for k, v in self.state_dict().items() if k != "log_threshold"}
        sd["threshold"] = self.theta.detach().clone()
        return sd

    def load_saelens_tensors(self, tensors: dict[str, Tensor]) -> None:
        t = dict(tensors)
        if self.cfg.threshold_param == "log":
            t["log_threshold"] = t.pop("threshold").log()  # threshold 0 -> log -inf -> exp gives exactly 0 again
        self.load_state_dict(t, strict=True)
