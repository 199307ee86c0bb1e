"""``alignlab sae export --to jumprelu`` (spec §6): any alignlab SAE as a JumpReLU SAE file.

A JumpReLU file (``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``, ``threshold``) is what tools that need a ``b_enc``
can display (sae_vis #54). One exporter per architecture, in ``EXPORTERS``:

- gated (exact): θ = b_mag − e^{r_mag} ⊙ b_gate; the gate π_gate > 0 opens exactly when π_mag > θ, so
  f̃ = ReLU(π_mag)·H(π_mag − θ) = π_mag·H(π_mag − max(θ, 0)). W_enc' = W_gate·diag(e^{r_mag}), b_enc' = b_mag.
- batchtopk, matryoshka (exact): their inference rule ReLU(z)·H(z − θ) with the global θ.
- standard, lp (exact): a ReLU is a JumpReLU with θ = 0. jumprelu: a copy.
- topk (approximate): per-token top-k has no threshold form. θ is either given or estimated on activations
  as BatchTopK's inference threshold (Bussmann et al., arXiv 2412.06410; ``estimate_topk_threshold``); the report
  gives the exported L0 next to k and the relative change in reconstruction error on those activations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from alignlab.errors import AlignlabError
from alignlab.sae.base import SAE, SAEConfig


@dataclass
class ExportResult:
    sae: SAE
    """The exported JumpReLU SAE (eval mode)."""
    exact: bool
    """True when the exported forward equals the source's (up to float rounding)."""
    report: dict[str, Any] = field(default_factory=dict)
    """Calibration numbers for approximate exports (θ, L0 before/after, relative MSE change)."""


def _base_tensors(sae: SAE) -> dict[str, Tensor]:
    return {k: getattr(sae, k).detach().clone() for k in ("W_enc", "b_enc", "W_dec", "b_dec")}


def _gated(sae: Any, threshold: Tensor | None) -> tuple[dict[str, Tensor], bool]:
    return sae.jumprelu_tensors(), True


def _relu(sae: Any, threshold: Tensor | None) -> tuple[dict[str, Tensor], bool]:
    return {**_base_tensors(sae), "threshold": sae.W_enc.new_zeros(sae.cfg.d_sae)}, True


def _jumprelu(sae: Any, threshold: Tensor | None) -> tuple[dict[str, Tensor], bool]:
    return {**_base_tensors(sae), "threshold": sae.theta.detach().clone()}, True


def _batch_threshold(sae: Any, threshold: Tensor | None) -> tuple[dict[str, Tensor], bool]:
    theta = sae.threshold.detach().to(sae.W_enc.dtype).clamp_min(0.0).expand(sae.cfg.d_sae).clone()
    return {**_base_tensors(sae), "threshold": theta}, True


def _topk(sae: Any, threshold: Tensor | None) -> tuple[dict[str, Tensor], bool]:
    if threshold is None:
        raise AlignlabError("a TopK SAE has no threshold; pass --threshold or --acts to estimate one from activations")
    theta = threshold.to(sae.W_enc.dtype).clamp_min(0.0).expand(sae.cfg.d_sae).clone()
    return {**_base_tensors(sae), "threshold": theta}, False


EXPORTERS: dict[str, Callable[[Any, Tensor | None], tuple[dict[str, Tensor], bool]]] = {
    "gated": _gated,
    "standard": _relu,
    "lp": _relu,
    "jumprelu": _jumprelu,
    "batchtopk": _batch_threshold,
    "matryoshka": _batch_threshold,
    "topk": _topk,
}


@torch.no_grad()
def estimate_topk_threshold(sae: Any, batches: Iterable[Tensor]) -> float:
    """The BatchTopK inference θ of a TopK SAE: mean over batches of the smallest of the B·k largest ReLU
    pre-activations in the batch (Bussmann et al., arXiv 2412.06410), so the exported L0 averages k there.

    (The smallest activation per-token TopK keeps is a worse choice: one low-norm token sets it, and the
    exported L0 comes out several times k.)
    """
    cuts = []
    for x in batches:
        acts = torch.relu(sae.pre_acts(x.to(sae.W_enc.dtype))).flatten()  # [B * d_sae]
        kept = acts.topk(min(x.shape[0] * sae.cfg.k, acts.numel())).values
        kept = kept[kept > 0]
        if kept.numel():
            cuts.append(float(kept.min()))
    if not cuts:
        raise AlignlabError("no latent fired on the calibration activations; pass --threshold instead")
    return sum(cuts) / len(cuts)


def to_jumprelu(sae: SAE, threshold: float | None = None) -> ExportResult:
    """The JumpReLU SAE with ``sae``'s forward (exact) or its calibrated stand-in (topk with ``threshold``)."""
    from alignlab.sae.registry import build_sae

    arch = sae.cfg.architecture
    if arch not in EXPORTERS:
        raise AlignlabError(f"no JumpReLU export for {arch!r}; exportable: {', '.join(EXPORTERS)}")
    theta = None if threshold is None else torch.tensor(float(threshold))
    with torch.no_grad():
        tensors, exact = EXPORTERS[arch](sae, theta)
    src = sae.cfg
    cfg = SAEConfig(architecture="jumprelu", d_in=src.d_in, d_sae=src.d_sae,
                    apply_b_dec_to_input=bool(src.apply_b_dec_to_input), unit_norm_decoder=False,
                    model=src.model, hook_layer=src.hook_layer, hook_point=src.hook_point,
                    context_size=src.context_size, input_scale=src.input_scale,
                    extra={**src.extra, "exported_from": arch, "export_exact": exact})
    dtype = sae.W_enc.dtype  # an fp64 source exports in fp64 (the exactness test runs there)
    out = build_sae(cfg).to(dtype)
    out.load_saelens_tensors({k: v.to(dtype).contiguous() for k, v in tensors.items()})
    return ExportResult(out.eval(), exact)


@torch.no_grad()
def compare_on(source: SAE, exported: SAE, batches: Iterable[Tensor]) -> dict[str, float]:
    """L0 and MSE of both SAEs on the same activations (the report of an approximate export)."""
    tot = {"n": 0, "l0_src": 0.0, "l0_out": 0.0, "mse_src": 0.0, "mse_out": 0.0, "max_abs_diff": 0.0}
    for x in batches:
        x = x.to(source.W_enc.dtype)
        f_s, f_o = source.encode(x), exported.encode(x)
        r_s, r_o = source.decode(f_s), exported.decode(f_o)
        tot["n"] += x.shape[0]
        tot["l0_src"] += float((f_s > 0).sum())
        tot["l0_out"] += float((f_o > 0).sum())
        tot["mse_src"] += float((r_s - x).pow(2).sum())
        tot["mse_out"] += float((r_o - x).pow(2).sum())
        tot["max_abs_diff"] = max(tot["max_abs_diff"], float((r_s - r_o).abs().max()))
    n = max(tot.pop("n"), 1)
    out = {k: v / n if k != "max_abs_diff" else v for k, v in tot.items()}
    out["mse_rel_change"] = (out["mse_out"] - out["mse_src"]) / max(out["mse_src"], 1e-30)
    return out
