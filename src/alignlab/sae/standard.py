"""Standard ReLU SAE (spec §2.1) with its two recipes.

f = ReLU(W_enc (x - b_dec) + b_enc), x_hat = W_dec f + b_dec.

- ``bricken`` (Bricken et al. 2023 "Towards Monosemanticity"; Gated paper §2 / App. D baseline):
  L = ||x - x_hat||^2 + lambda ||f||_1, decoder rows held at exactly unit norm by the projected Adam
  step, dead-latent resampling.
- ``april2024`` (Anthropic Circuits Updates, April 2024; SAELens StandardTrainingSAE, dictionary_learning
  StandardTrainerAprilUpdate): L = ||x - x_hat||^2 + lambda sum_i f_i ||d_i||, free decoder norms, decoder
  rows initialised to norm 0.1 with W_enc = W_dec^T, no b_dec on the input, inputs scaled to
  E||x|| = sqrt(d), lambda warm-up over 5% of steps, LR decay over the last 20%.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from alignlab.errors import AlignlabError
from alignlab.sae.arch_table import register
from alignlab.sae.base import SAE, LossOutput, SAEConfig, TrainState, centered_linear, recon_error

STANDARD_RECIPES = {
    "bricken": {
        "weight_by_decoder_norm": False,
        "unit_norm_decoder": True,
        "resample_dead": True,
        "apply_b_dec_to_input": True,
        "init_decoder_norm": 1.0,
        "normalize_activations": "none",
    },
    "april2024": {
        "weight_by_decoder_norm": True,
        "unit_norm_decoder": False,
        "resample_dead": False,
        "apply_b_dec_to_input": False,
        "init_decoder_norm": 0.1,
        "normalize_activations": "expected_average_only_in",
    },
}


@register("standard")
class StandardSAE(SAE):
    saelens_architecture = "standard"
    default_recipe = "bricken"
    recipes = STANDARD_RECIPES

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.b_enc = torch.nn.Parameter(torch.zeros(cfg.d_sae))
        self.init_weights_()

    @classmethod
    def resolve(cls, cfg: SAEConfig) -> dict[str, Any]:
        recipe = cfg.recipe or cls.default_recipe
        if recipe not in cls.recipes:
            raise AlignlabError(
                f"unknown recipe {recipe!r} for {cfg.architecture}; choose one of {', '.join(cls.recipes)}"
            )
        object.__setattr__(cfg, "recipe", recipe)
        return dict(cls.recipes[recipe])

    def pre_acts(self, x: Tensor) -> Tensor:  # [B, d_in] -> [B, d_sae]
        return centered_linear(x, self.b_dec_for_input(), self.W_enc, self.b_enc)

    def encode(self, x: Tensor) -> Tensor:
        return torch.relu(self.pre_acts(x))

    def decode(self, f: Tensor) -> Tensor:
        return torch.addmm(self.b_dec, f, self.W_dec) if f.dtype == self.W_dec.dtype else f @ self.W_dec + self.b_dec

    def penalty(self, f: Tensor, state: TrainState) -> Tensor:
        """Per-batch sparsity penalty without lambda: mean over tokens of sum_i w_i f_i (f >= 0)."""
        if self.cfg.weight_by_decoder_norm:
            return (f @ self.decoder_norms()).mean()
        return f.sum(-1).mean()

    def loss(self, x: Tensor, state: TrainState) -> LossOutput:
        f = self.encode(x)  # [B, d_sae]
        x_hat = self.decode(f)  # [B, d_in]
        mse = recon_error(x, x_hat, self.cfg)
        sparsity = self.penalty(f, state)
        total = mse + state.lam(self.cfg) * sparsity
        return LossOutput(total, {"mse": mse, "sparsity": sparsity}, f, x_hat)
