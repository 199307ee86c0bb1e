"""TopK SAE with AuxK (Gao et al., arXiv 2406.04093; reference code openai/sparse_autoencoder; spec §2.4).

z = ReLU(TopK_k(W_enc (x - b_pre) + b_enc)); x_hat = W_dec z + b_pre  (b_pre is stored as b_dec).
L = ||x - x_hat||^2 + alpha L_aux, no L1 term.
AuxK: e = sg(x - x_hat); z_aux keeps the top-k_aux pre-activations among DEAD latents;
L_aux = ||e - W_dec z_aux||^2, scaled by min(#dead / k_aux, 1) and skipped when nothing is dead.
alpha = 1/32, k_aux = d/2 (the heuristic of sparsify, SAELens, dictionary_learning).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from alignlab.errors import AlignlabError
from alignlab.sae.arch_table import register
from alignlab.sae.base import SAE, LossOutput, SAEConfig, TrainState, centered_linear, recon_error

_TOPK = {
    "weight_by_decoder_norm": False,
    "unit_norm_decoder": True,
    "resample_dead": False,
    "apply_b_dec_to_input": True,
    "init_decoder_norm": 1.0,
    "normalize_activations": "none",
    "b_dec_init": "geometric_median",  # Gao et al. 2024: b_pre = geometric median of a sample
}


def sparse_decode(idx: Tensor, vals: Tensor, w_dec: Tensor, bias: Tensor | None) -> Tensor:
    """sum_j vals[b, j] * W_dec[idx[b, j]] (+ bias): 2kd FLOPs per token instead of 2nd.

    ``idx``/``vals`` are [B, k]; returns [B, d_in]. Gradients reach ``vals`` and the touched W_dec rows.
    """
    out = F.embedding_bag(idx, w_dec, per_sample_weights=vals.to(w_dec.dtype), mode="sum")
    return out if bias is None else out + bias


def topk_select(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(idx, vals) of the k largest pre-activations per row, ReLU applied after the selection."""
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    return idx, torch.relu(vals)


def scatter_dense(shape: torch.Size, idx: Tensor, vals: Tensor) -> Tensor:
    return torch.zeros(shape, dtype=vals.dtype, device=vals.device).scatter(-1, idx, vals)


def auxk_loss(sae: SAE, pre: Tensor, x: Tensor, x_hat: Tensor, dead: Tensor | None) -> Tensor | None:
    """AuxK term (before alpha), or None when no latent is dead. ``pre`` is [B, d_sae]."""
    if dead is None:
        return None
    n_dead = int(dead.sum())
    if n_dead == 0:
        return None
    k_aux = sae.cfg.aux_k
    pre_dead = pre.masked_fill(~dead, float("-inf"))  # only dead latents can be chosen
    idx, vals = topk_select(pre_dead, min(k_aux, n_dead))
    e = (x - x_hat).detach()  # sg(x - x_hat)
    e_hat = sparse_decode(idx, vals, sae.W_dec, None)
    return recon_error(e, e_hat, sae.cfg) * min(n_dead / k_aux, 1.0)


class _TopKFamily(SAE):
    """Shared parameters, init and validation of topk / batchtopk / matryoshka."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.b_enc = torch.nn.Parameter(torch.zeros(cfg.d_sae))
        self.init_weights_()

    @classmethod
    def resolve(cls, cfg: SAEConfig) -> dict[str, Any]:
        if cfg.recipe not in ("", "paper"):
            raise AlignlabError(f"{cfg.architecture} has no recipe {cfg.recipe!r}; leave recipe empty")
        if cfg.k is None:
            raise AlignlabError(f"{cfg.architecture} needs k (active latents per token); pass --k")
        if cfg.aux_k is None:
            object.__setattr__(cfg, "aux_k", max(1, min(cfg.d_in // 2, cfg.d_sae)))
        return dict(_TOPK)

    @classmethod
    def validate(cls, cfg: SAEConfig) -> None:
        if cfg.aux_k is not None and cfg.aux_k < 1:
            raise AlignlabError(f"aux_k must be >= 1, got {cfg.aux_k}")

    def pre_acts(self, x: Tensor) -> Tensor:  # [B, d_in] -> [B, d_sae]
        return centered_linear(x, self.b_dec_for_input(), self.W_enc, self.b_enc)

    def decode(self, f: Tensor) -> Tensor:
        return torch.addmm(self.b_dec, f, self.W_dec) if f.dtype == self.W_dec.dtype else f @ self.W_dec + self.b_dec

    def _finish(self, x: Tensor, pre: Tensor, z: Tensor, x_hat: Tensor, state: TrainState, terms: dict) -> LossOutput:
        total = sum(terms.values())
        aux = auxk_loss(self, pre, x, x_hat, state.dead_mask)
        if aux is not None:
            terms["auxk"] = aux
            total = total + self.cfg.aux_k_coefficient * aux
        return LossOutput(total, terms, z, x_hat)


@register("topk")
class TopKSAE(_TopKFamily):
    saelens_architecture = "topk"

    def encode(self, x: Tensor) -> Tensor:
        pre = self.pre_acts(x)
        idx, vals = topk_select(pre, self.cfg.k)
        return scatter_dense(pre.shape, idx, vals)

    def loss(self, x: Tensor, state: TrainState) -> LossOutput:
        pre = self.pre_acts(x)  # [B, d_sae]
        idx, vals = topk_select(pre, self.cfg.k)  # [B, k] x2
        x_hat = sparse_decode(idx, vals, self.W_dec, self.b_dec)  # [B, d_in]
        z = scatter_dense(pre.shape, idx, vals.detach())  # for L0 / dead tracking only
        mse = recon_error(x, x_hat, self.cfg)
        return self._finish(x, pre, z, x_hat, state, {"mse": mse})

    def saelens_cfg_extra(self) -> dict[str, Any]:
        return {"k": self.cfg.k, "rescale_acts_by_decoder_norm": False}
