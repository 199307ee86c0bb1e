"""Matryoshka BatchTopK SAE (Bussmann, Nabeshima, Karvonen, Nanda, ICML 2025, arXiv 2503.17547; spec §2.7).

L = sum_l ||x - (W_dec[:, :M_l] f[:M_l] + b_dec)||^2 + BatchTopK sparsity + alpha L_aux, nested widths
M_1 < ... < M_L = d_sae (``matryoshka_widths``). f is computed once over the full width; each prefix
reconstruction reuses the previous partial sum and adds only its own slice.

Caveats (documented): narrow inner levels invite feature hedging, and the extra decodes slow training.
Saved as ``jumprelu`` with the global theta, like BatchTopK.
"""

from __future__ import annotations

from torch import Tensor

from alignlab.errors import AlignlabError
from alignlab.sae.arch_table import register
from alignlab.sae.base import LossOutput, SAEConfig, TrainState, recon_error
from alignlab.sae.batchtopk import BatchTopKSAE


def default_widths(d_sae: int) -> tuple[int, ...]:
    """d_sae/16, /8, /4, /2 and d_sae (duplicates and zeros dropped for tiny widths): five nested levels, so the
    preset trains a Matryoshka SAE and not a plain BatchTopK one."""
    return tuple(sorted({max(1, d_sae // 2**j) for j in (4, 3, 2, 1, 0)}))


@register("matryoshka")
class MatryoshkaSAE(BatchTopKSAE):
    @classmethod
    def validate(cls, cfg: SAEConfig) -> None:
        super().validate(cfg)
        widths = tuple(cfg.matryoshka_widths) or default_widths(cfg.d_sae)
        if list(widths) != sorted(set(widths)) or widths[0] < 1 or widths[-1] != cfg.d_sae:
            raise AlignlabError(
                f"matryoshka_widths must be strictly increasing and end at d_sae={cfg.d_sae}, got {widths}"
            )
        object.__setattr__(cfg, "matryoshka_widths", widths)

    def loss(self, x: Tensor, state: TrainState) -> LossOutput:
        pre, z = self.select(x, state)  # [B, d_sae]
        terms: dict[str, Tensor] = {}
        partial = self.b_dec.expand_as(x)  # x_hat_0 = b_dec
        start = 0
        total_recon = None
        for level, width in enumerate(self.cfg.matryoshka_widths):
            partial = partial + z[:, start:width] @ self.W_dec[start:width]  # add this level's slice only
            term = recon_error(x, partial, self.cfg)
            terms[f"mse_{level}"] = term
            total_recon = term if total_recon is None else total_recon + term
            start = width
        x_hat = partial
        out = self._finish(x, pre, z.detach(), x_hat, state, {"mse": total_recon})
        out.terms.update(terms)
        return out
