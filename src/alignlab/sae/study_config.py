"""Settings of ``alignlab sae study`` (issue 17): which SAEs are trained, how long, and what is measured.

Every SAE of the study trains on the same activation stream (the cache minus a held-out tail), with inputs
scaled once by s = 1 / sqrt(E||x||^2) (the ``unit_mean_sq`` convention of the presets, spec §3.5), so one
lambda means the same thing in every architecture and width. The defaults are sized for the 2-core CPU
machine (issue 17: default <= 90 min, ``--quick`` <= 20 min); they are far shorter than the papers' runs
(~1B tokens), which the study report states next to every answer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from alignlab.errors import AlignlabError

# Study architecture -> the registry preset whose recipe (loss, init, optimiser fields) it uses.
ARCH_PRESETS: dict[str, str] = {
    "standard": "standard_bricken",
    "gated": "gated",
    "lp": "lp",
    "topk": "topk",
    "batchtopk": "batchtopk",
    "jumprelu": "jumprelu",
    "matryoshka": "matryoshka",
    # gated ablations (arXiv 2404.16014 Figure 9; study_variants.py) use the gated recipe
    "gated_no_bmag": "gated",
    "gated_untied_mag": "gated",
    "gated_no_aux": "gated",
    "rescale_shift": "standard_bricken",
}
FRONTIER_ARCHS = ("standard", "gated", "lp", "topk", "batchtopk", "jumprelu", "matryoshka")
ABLATIONS = ("gated_no_bmag", "gated_untied_mag", "gated_no_aux")

# Sparsity settings per architecture (SAEConfig fields), densest first. The L1-family lambdas extend the
# issue-14 tuning on SmolLM2-135M layer 15 under unit_mean_sq inputs (gated 0.1 -> L0 128, 0.3 -> 20;
# standard 0.1 -> 56; lp 0.1 -> 16, width 1152, 200 steps of 512 tokens). JumpReLU trains theta itself
# (threshold_param linear, issue 14), so its sparsity knob is the L0 coefficient lambda (arXiv 2407.14435
# eq. 11); lambda = 1e-3 gave L0 ~70 on the same setup, larger values trade L0 down.
SPARSITY: dict[str, tuple[dict[str, Any], ...]] = {
    "standard": tuple({"l1_coefficient": v} for v in (0.03, 0.06, 0.12, 0.25)),
    "gated": tuple({"l1_coefficient": v} for v in (0.05, 0.1, 0.2, 0.4)),
    "lp": tuple({"l1_coefficient": v} for v in (0.03, 0.06, 0.12, 0.25)),
    "topk": tuple({"k": v} for v in (64, 32, 16, 8)),
    "batchtopk": tuple({"k": v} for v in (64, 32, 16, 8)),
    "matryoshka": tuple({"k": v} for v in (64, 32, 16, 8)),
    "jumprelu": tuple({"l1_coefficient": v} for v in (1e-3, 3e-3, 1e-2, 3e-2)),
}
for _name in ABLATIONS:
    SPARSITY[_name] = SPARSITY["gated"]
SPARSITY["rescale_shift"] = SPARSITY["standard"]

# Extra SAEConfig fields per architecture. L_p: p anneals from 1 to 0.5 starting half-way, so the
# annealing actually runs in a short study (issue 17; Karvonen et al. arXiv 2408.00113 §4.3).
ARCH_FIELDS: dict[str, dict[str, Any]] = {"lp": {"p": 1.0, "p_end": 0.5, "anneal_start_frac": 0.5}}


@dataclass(frozen=True)
class StudyConfig:
    """What the study trains and measures (see the module docstring)."""

    seed: int = 0
    """Seed of the data order, the SAE initialisations and the probe splits."""
    expansion: int = 4
    """Dictionary width of the frontier, sweep and ablation SAEs, as a multiple of d_model."""
    steps: int = 200
    """Optimiser steps per SAE."""
    batch_size: int = 512
    """Tokens per optimiser step."""
    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3)
    """Learning rates swept per architecture at its middle sparsity setting (>= 3 values)."""
    default_lr: float = 3e-4
    """The one learning rate of the 'without sweep' frontier (the Gated paper used 3e-4 for every gated run)."""
    rescale_lr: float = 1e-2
    """lr of the 'baseline + rescale & shift' fine-tune. It trains 2 d_sae scalars (log-scale, shift) and Adam
    moves each by ~lr per step, so the SAE lrs (<= 1e-3) could not undo a 10% shrinkage in a short run."""
    no_sweep_archs: tuple[str, ...] = ("standard", "gated")
    """Architectures also trained at default_lr for every setting (the 'without sweep' frontier)."""
    archs: tuple[str, ...] = FRONTIER_ARCHS
    """Architectures on the frontier plots."""
    widths: tuple[int, ...] = (4, 8, 16, 32)
    """Expansion factors of the width study (gated and standard at matched L0)."""
    width_archs: tuple[str, ...] = ("standard", "gated")
    """Architectures of the width study."""
    stability_ps: tuple[float, ...] = (1.0, 0.5, 0.2)
    """Fixed exponents p of the L_p stability runs."""
    stability_eps: float = 1e-3
    """epsilon of the smoothed penalty (f + eps)^p - eps^p (its gradient is bounded by p eps^(p-1))."""
    stability_steps: int = 200
    """Optimiser steps per stability run."""
    heldout_rows: int = 4096
    """Rows at the end of the cache held out from training for L0 / FVU / dead and dense fractions."""
    outlier_norm: float = 10.0
    """Rows whose norm exceeds this multiple of the median row norm are left out of training and held-out
    metrics, and passed through unchanged in the CE splice (as BOS is): SmolLM2's massive-activation tokens
    (~0.02% of rows, norms up to 75x the median; Sun et al., arXiv 2402.17762) otherwise dominate FVU."""
    ce_tokens: int = 2048
    """Held-out text tokens for CE loss recovered (one LM forward per SAE; 0 skips CE)."""
    ce_batch_contexts: int = 8
    """Contexts per LM forward in the CE evaluation."""
    probe_tokens: int = 8192
    """Tokens of held-out stdlib source for sparse probing (0 skips probing)."""
    probe_ks: tuple[int, ...] = (1, 2, 4, 8, 16)
    """Latents per k-sparse probe (chosen by mean difference, SAEBench style)."""
    probe_l0: float = 32.0
    """Each architecture is probed with its frontier SAE whose held-out L0 is closest to this."""
    checkpoint_every: int = 100
    """Trainer checkpoint interval in steps (a killed study resumes from it)."""
    device: str = "auto"
    """cpu | cuda | cuda:N | auto."""
    sparsity: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=lambda: dict(SPARSITY))
    """Sparsity settings per architecture (SAEConfig fields), densest first."""

    def __post_init__(self) -> None:
        if self.steps < 10 or self.batch_size < 8 or self.stability_steps < 10:
            raise AlignlabError(
                f"steps and stability_steps must be >= 10 and batch_size >= 8 "
                f"(got {self.steps}, {self.stability_steps}, {self.batch_size})"
            )
        if len(self.lrs) < 3 or not all(lr > 0 and math.isfinite(lr) for lr in (*self.lrs, self.rescale_lr)):
            raise AlignlabError(f"the lr sweep needs >= 3 positive learning rates, got {list(self.lrs)}")
        if self.default_lr not in self.lrs:
            raise AlignlabError(
                f"default_lr {self.default_lr:g} must be one of the swept lrs {list(self.lrs)}"
            )
        unknown = sorted(
            a for a in {*self.archs, *self.width_archs, *self.no_sweep_archs} if a not in ARCH_PRESETS
        )
        if unknown:
            raise AlignlabError(f"unknown study architectures {unknown}; known: {', '.join(FRONTIER_ARCHS)}")
        if not set(self.no_sweep_archs) <= set(self.archs):
            raise AlignlabError(
                f"no_sweep_archs {list(self.no_sweep_archs)} must be among archs {list(self.archs)}"
            )
        for arch in set(self.archs) | set(self.width_archs) | set(ABLATIONS) | {"rescale_shift"}:
            if len(self.sparsity.get(arch, ())) < 4:
                raise AlignlabError(f"architecture {arch} needs >= 4 sparsity settings")
        if self.expansion < 1 or any(w < 1 for w in self.widths) or len(self.widths) < 2:
            raise AlignlabError(
                f"expansion and widths must be >= 1 (and >= 2 widths), got {self.expansion}, "
                f"{list(self.widths)}"
            )
        if not self.probe_ks or min(self.probe_ks) < 1:
            raise AlignlabError(f"probe_ks must be positive, got {list(self.probe_ks)}")
        if self.heldout_rows < 64 or self.stability_eps <= 0 or self.outlier_norm <= 1:
            raise AlignlabError("heldout_rows must be >= 64, stability_eps > 0 and outlier_norm > 1")

    def replace(self, **changes: Any) -> StudyConfig:
        return dataclasses.replace(self, **changes)

    def training_key(self) -> dict[str, Any]:
        """The fields that decide what a trained SAE is (a study folder refuses to mix two of these)."""
        keep = (
            "seed",
            "expansion",
            "steps",
            "batch_size",
            "stability_steps",
            "stability_eps",
            "heldout_rows",
            "outlier_norm",
        )  # lrs are part of each SAE's name
        out = {k: getattr(self, k) for k in keep}
        out["sparsity"] = {k: [dict(s) for s in v] for k, v in sorted(self.sparsity.items())}
        return out

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["sparsity"] = {k: [dict(s) for s in v] for k, v in sorted(self.sparsity.items())}
        return out


def quick_config(**overrides: Any) -> StudyConfig:
    """``--quick``: every question answered at a smaller scale (2x base width, widths 1-4x, shorter runs)."""
    fields: dict[str, Any] = {
        "expansion": 2,
        "steps": 100,
        "batch_size": 256,
        "widths": (1, 2, 4),
        "stability_steps": 100,
        "heldout_rows": 2048,
        "ce_tokens": 512,
        "ce_batch_contexts": 4,
        "probe_tokens": 4096,
        "checkpoint_every": 50,
    }
    fields.update(overrides)
    return StudyConfig(**fields)


def setting_label(setting: dict[str, Any]) -> str:
    """The swept value of a sparsity setting, e.g. ``l1=0.1``, ``k=32``, ``theta0=0.02``."""
    if "k" in setting:
        return f"k={setting['k']}"
    if "threshold_init" in setting:
        return f"theta0={setting['threshold_init']:g}"
    return f"l1={setting.get('l1_coefficient', 0):g}"
