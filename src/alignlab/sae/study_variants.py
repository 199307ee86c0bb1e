"""The Gated-SAE ablations of the study (arXiv 2404.16014 §5.1 / Figure 9; issue 17 item 2).

Each is a registered architecture, so the ordinary trainer, checkpoints and SAELens folders handle it:

- ``gated_no_bmag``: b_mag := b_gate. One parameter serves both paths (pi_mag = exp(r_mag) u + b_gate), so it
  receives the reconstruction and the sparsity/auxiliary gradients; ``b_mag`` is kept as a frozen mirror,
  copied from b_gate after every step, so exports and inspection see the tie. ("Is b_mag still necessary?",
  the first question of the announcement thread.)
- ``gated_untied_mag``: an independent W_mag (initialised to W_gate) replaces diag(exp(r_mag)) W_gate; r_mag
  is gone. W_gate then learns only from the sparsity and auxiliary terms (the paper's +50% parameter variant).
- ``gated_no_aux``: the paper loss without the frozen-decoder auxiliary reconstruction term.
- ``rescale_shift``: "baseline + rescale & shift". A trained standard SAE is frozen (encoder, so its gate
  H(pi) and L0 are fixed, and decoder); each latent's magnitude becomes ReLU(exp(rho_i) pi_i + delta_i), and
  only the per-latent rho and delta are trained (both 0 at the start, so training starts exactly at the
  baseline), on reconstruction alone (L0 cannot change, so there is no sparsity term). Any gain over the
  baseline is then the part of the gated benefit that undoing shrinkage of the magnitudes explains.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from alignlab.sae.arch_table import register
from alignlab.sae.base import SAE, LossOutput, SAEConfig, TrainState, recon_error
from alignlab.sae.gated import GatedSAE, _GatedEncode, _NoCtx
from alignlab.sae.standard import StandardSAE


@register("gated_no_bmag")
class GatedNoBmagSAE(GatedSAE):
    """Gated SAE with b_mag tied to b_gate (one parameter in both places)."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.b_mag.requires_grad_(False)  # a mirror of b_gate, never an optimiser parameter
        self._sync_mirror()

    @torch.no_grad()
    def _sync_mirror(self) -> None:
        self.b_mag.copy_(self.b_gate)

    def _encode_parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b = self.b_dec if self.cfg.apply_b_dec_to_input else None
        if x.requires_grad:  # eager reference composition
            xc = x if b is None else x - b
            u = xc @ self.W_enc  # [B, d_sae]
            pi_gate = u + self.b_gate
            return (pi_gate > 0).to(u.dtype) * torch.relu(self.r_mag.exp() * u + self.b_gate), torch.relu(
                pi_gate
            )
        if not torch.is_grad_enabled():
            return _GatedEncode.forward(_NoCtx(), x, b, self.W_enc, self.b_gate, self.r_mag, self.b_gate)
        # the same tensor in both bias slots: autograd sums its two gradients into b_gate
        return _GatedEncode.apply(x, b, self.W_enc, self.b_gate, self.r_mag, self.b_gate)

    @torch.no_grad()
    def after_step(self) -> None:
        super().after_step()
        self._sync_mirror()


@register("gated_untied_mag")
class GatedUntiedMagSAE(GatedSAE):
    """Gated SAE with an independent W_mag [d_in, d_sae] and no r_mag."""

    saelens_architecture = "gated_untied_mag"  # not a SAELens layout: the folder keeps every tensor

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        del self._parameters["r_mag"]
        self.W_mag = torch.nn.Parameter(self.W_enc.detach().clone())  # tied at init, free afterwards

    def _encode_parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        xc = x - self.b_dec if self.cfg.apply_b_dec_to_input else x  # [B, d_in]
        pi_gate = xc @ self.W_enc + self.b_gate  # [B, d_sae]
        pi_mag = xc @ self.W_mag + self.b_mag  # [B, d_sae]
        return (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag), torch.relu(pi_gate)

    def jumprelu_tensors(self) -> dict[str, Tensor]:
        raise NotImplementedError("gated_untied_mag has no JumpReLU form (its two encoders differ)")


@register("gated_no_aux")
class GatedNoAuxSAE(GatedSAE):
    """Gated SAE trained without the auxiliary reconstruction term."""

    def loss(self, x: Tensor, state: TrainState) -> LossOutput:
        f, rg = self._encode_parts(x)  # [B, d_sae] x2
        x_hat = self.decode(f)  # [B, d_in]
        mse = recon_error(x, x_hat, self.cfg)
        sparsity = self.penalty(rg, state)
        total = mse + state.lam(self.cfg) * sparsity
        return LossOutput(total, {"mse": mse, "sparsity": sparsity}, f, x_hat, rg)


_FROZEN_BASELINE = {
    "weight_by_decoder_norm": False,
    "unit_norm_decoder": False,  # the decoder is frozen: nothing to renormalise
    "resample_dead": False,  # resampling would rewrite the frozen weights
    "apply_b_dec_to_input": False,  # the baseline's input centring is folded into the frozen b_enc
    "init_decoder_norm": 1.0,
    "normalize_activations": "none",
}
_RECIPE_FIELDS = (
    "weight_by_decoder_norm",
    "unit_norm_decoder",
    "resample_dead",
    "apply_b_dec_to_input",
    "init_decoder_norm",
    "normalize_activations",
    "b_dec_init",
)


@register("rescale_shift")
class RescaleShiftSAE(StandardSAE):
    """A frozen standard SAE whose latent magnitudes get a learned per-latent scale and shift."""

    saelens_architecture = "rescale_shift"  # not a SAELens layout: the folder keeps every tensor
    default_recipe = "frozen_baseline"
    recipes = {"frozen_baseline": _FROZEN_BASELINE}
    trainable = ("log_scale", "shift")

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.log_scale = torch.nn.Parameter(torch.zeros(cfg.d_sae))  # rho
        self.shift = torch.nn.Parameter(torch.zeros(cfg.d_sae))  # delta
        for name, param in self.named_parameters():
            param.requires_grad_(name in self.trainable)

    def pre_acts(self, x: Tensor) -> Tensor:  # [B, d_in] -> [B, d_sae], frozen
        return x @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        pre = self.pre_acts(x)
        mag = torch.relu(pre * self.log_scale.exp() + self.shift)
        return torch.where(pre > 0, mag, torch.zeros_like(mag))  # H(pi) * ReLU(e^rho pi + delta)

    def loss(self, x: Tensor, state: TrainState) -> LossOutput:
        f = self.encode(x)  # [B, d_sae]
        x_hat = self.decode(f)  # [B, d_in]
        mse = recon_error(x, x_hat, self.cfg)
        return LossOutput(mse, {"mse": mse}, f, x_hat)

    @classmethod
    @torch.no_grad()
    def from_standard(cls, base: SAE, **fields: Any) -> RescaleShiftSAE:
        """A rescale & shift SAE that starts as exactly the function of the standard SAE ``base``."""
        reset = dict.fromkeys(_RECIPE_FIELDS)
        cfg = base.cfg.replace(architecture="rescale_shift", recipe="", **reset, **fields)
        sae = cls(cfg)
        b_enc = base.b_enc.detach().clone()
        if base.cfg.apply_b_dec_to_input:  # (x - b_dec) W + b = x W + (b - b_dec W)
            b_enc = b_enc - base.b_dec.detach() @ base.W_enc.detach()
        sae.W_enc.copy_(base.W_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(base.W_dec)
        sae.b_dec.copy_(base.b_dec)
        return sae


VARIANTS = ("gated_no_bmag", "gated_untied_mag", "gated_no_aux", "rescale_shift")
