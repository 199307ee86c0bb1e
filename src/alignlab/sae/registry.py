"""Architecture registry and the named presets of spec §2.

``REGISTRY`` maps an architecture name to its ``SAE`` subclass; ``PRESETS`` maps a spec preset name
(``standard_bricken``, ``gated``, ``topk`` ...) to the SAEConfig fields and TrainConfig fields it sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from alignlab.errors import AlignlabError
from alignlab.sae.arch_table import REGISTRY, register  # noqa: F401 - register re-exported for plug-ins

if TYPE_CHECKING:
    from alignlab.sae.base import SAE, SAEConfig

# Fallbacks for fields a recipe leaves open (applied after the architecture's own ``resolve``).
_FALLBACKS: dict[str, Any] = {
    "weight_by_decoder_norm": False,
    "unit_norm_decoder": True,
    "resample_dead": False,
    "apply_b_dec_to_input": True,
    "normalize_activations": "none",
    "init_decoder_norm": 1.0,
    "p_anneal": False,
    "b_dec_init": "zeros",
    "bandwidth": 0.001,
    "threshold_init": 0.001,
    "threshold_param": "linear",
}


def get_class(name: str) -> type[SAE]:
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise AlignlabError(f"unknown SAE architecture {name!r}; known architectures: {known}")
    return REGISTRY[name]


def resolve_defaults(cfg: SAEConfig) -> None:
    """Validate ``cfg`` for its architecture and fill recipe defaults into its ``None`` fields (in place)."""
    cls = get_class(cfg.architecture)
    updates = cls.resolve(cfg)  # type: ignore[attr-defined]
    for key, value in updates.items():
        if getattr(cfg, key) is None:
            object.__setattr__(cfg, key, value)
    for key, value in _FALLBACKS.items():
        if getattr(cfg, key) is None:
            object.__setattr__(cfg, key, value)
    cls.validate(cfg)  # type: ignore[attr-defined]


def build_sae(cfg: SAEConfig) -> SAE:
    """Instantiate and initialise ``cfg.architecture``; unknown names raise a one-line AlignlabError."""
    return get_class(cfg.architecture)(cfg)


# name -> {"sae": SAEConfig fields, "train": TrainConfig fields}. Sources in spec §2 / §4.
#
# Scale convention of the L1-family and JumpReLU presets (issue 14): inputs are normalised to unit mean squared
# norm (``unit_mean_sq``, dictionary_learning / Gemma Scope; the scale is folded into the saved weights), with
# recon_reduction "sum" and no recon_normalizer. At raw residual-stream scale (mean norm 179 at layer 15 of
# SmolLM2-135M) a lambda of 1e-3 left these SAEs dense (L0 ~620 of 1152) and JumpReLU's eps = theta0 = 0.001
# never saw a pre-activation near its threshold. The lambdas below were tuned under this convention on
# SmolLM2-135M layer-15 activations, width 1152, 200 steps of 512 tokens (held-out L0 / FVU): gated 0.1 ->
# 128 / 0.051, 0.3 -> 20 / 0.098; standard_bricken 0.1 -> 56 / 0.083; lp 0.1 -> 16 / 0.098. Because the input
# scale is fixed, the same lambda means the same thing for other models and widths (spec §2.0).
_UNIT = {"normalize_activations": "unit_mean_sq"}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "standard_bricken": {  # Bricken et al. 2023; Gated paper App. D baseline
        "sae": {"architecture": "standard", "recipe": "bricken", **_UNIT, "l1_coefficient": 0.1},
        "train": {"adam_betas": (0.0, 0.999), "lr": 3e-4, "resample": True},
    },
    "standard_april": {  # Anthropic April 2024 update
        "sae": {"architecture": "standard", "recipe": "april2024"},
        "train": {"adam_betas": (0.9, 0.999), "lr": 5e-5, "l1_warmup_frac": 0.05, "lr_schedule": "linear_decay_tail",
                  "lr_decay_frac": 0.2},
    },
    "gated": {  # arXiv 2404.16014 + the two documented deviations (lambda warm-up, tied init)
        "sae": {"architecture": "gated", "recipe": "paper", **_UNIT, "l1_coefficient": 0.2},
        "train": {"adam_betas": (0.0, 0.999), "lr": 3e-4, "l1_warmup_steps": 2000, "resample": True},
    },
    "gated_paper_exact": {
        "sae": {"architecture": "gated", "recipe": "paper_exact", "tie_init": False, **_UNIT, "l1_coefficient": 0.2},
        "train": {"adam_betas": (0.0, 0.999), "lr": 3e-4, "l1_warmup_steps": 0, "resample": True},
    },
    "gated_april": {  # what SAELens 6.x ships (SAELens #539/#544)
        "sae": {"architecture": "gated", "recipe": "april", "aux_mode": "unfrozen_aux"},
        "train": {"adam_betas": (0.9, 0.999), "lr": 5e-5, "l1_warmup_frac": 0.05, "lr_schedule": "linear_decay_tail",
                  "lr_decay_frac": 0.2},
    },
    "gated_anneal": {
        "sae": {"architecture": "gated", "recipe": "anneal", **_UNIT, "l1_coefficient": 0.2},
        "train": {"adam_betas": (0.0, 0.999), "lr": 3e-4, "resample": True},
    },
    "lp": {"sae": {"architecture": "lp", "recipe": "anneal", **_UNIT, "l1_coefficient": 0.1},
           "train": {"adam_betas": (0.0, 0.999)}},
    "topk": {"sae": {"architecture": "topk", "k": 32}, "train": {"adam_eps": 6.25e-10, "lr": None}},
    "batchtopk": {"sae": {"architecture": "batchtopk", "k": 32}, "train": {"adam_eps": 6.25e-10, "lr": None}},
    "matryoshka": {"sae": {"architecture": "matryoshka", "k": 32}, "train": {"adam_eps": 6.25e-10, "lr": None}},
    # JumpReLU: eps = theta0 = 0.001 are values for normalised inputs (arXiv 2407.14435 App. I; Gemma Scope
    # normalises to unit mean squared norm), where pre-activations are ~1/sqrt(d) (~0.04 at d = 576). theta is
    # trained directly (threshold_param "linear", as SAELens and dictionary_learning do): Adam moves it by up to
    # ~lr per step, so it reaches that scale in ~10^2 steps; the paper's log theta moves by a factor of at most
    # ~e^lr per step and needs ~10^4 (issue 14: after 200 steps every theta was still 0.001). SmolLM2-135M
    # layer 15, width 1152, 200 x 512 tokens, lambda 1e-3: held-out L0 537 (log theta) -> 74 (theta), FVU 0.37.
    "jumprelu": {"sae": {"architecture": "jumprelu", "recipe": "paper", **_UNIT, "l1_coefficient": 1e-3}, "train": {}},
    "jumprelu_saelens": {"sae": {"architecture": "jumprelu", "recipe": "saelens", **_UNIT}, "train": {}},
    "jumprelu_tanh": {"sae": {"architecture": "jumprelu", "recipe": "tanh"}, "train": {"l1_warmup_frac": 1.0}},
}


def preset_config(name: str, d_in: int, d_sae: int, **overrides: Any) -> SAEConfig:
    """SAEConfig for a named preset, e.g. ``preset_config("gated", 576, 9216, l1_coefficient=1e-3)``."""
    from alignlab.sae.base import SAEConfig

    if name not in PRESETS:
        raise AlignlabError(f"unknown SAE preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    fields = dict(PRESETS[name]["sae"])
    fields.update(overrides)
    if fields.get("k") is not None:
        fields["k"] = min(int(fields["k"]), d_sae)
    return SAEConfig(d_in=d_in, d_sae=d_sae, **fields)


def preset_train_overrides(name: str) -> dict[str, Any]:
    """TrainConfig fields a preset sets (``lr: None`` means the width-scaled TopK rule, see trainer)."""
    if name not in PRESETS:
        raise AlignlabError(f"unknown SAE preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return dict(PRESETS[name]["train"])


# Import the architectures so that they register themselves in arch_table.REGISTRY.
from alignlab.sae import batchtopk, gated, jumprelu, lp, matryoshka, standard, topk  # noqa: E402,F401
