"""SAE config, base class and the shared building blocks every architecture uses.

Orientation follows the SAELens layout (spec §6): ``W_enc`` is [d_in, d_sae] and encoding computes
``x @ W_enc``; ``W_dec`` is [d_sae, d_in], so row i of ``W_dec`` is the decoder direction d_i.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from alignlab.errors import AlignlabError

RECON_REDUCTIONS = ("sum", "mean")
RECON_NORMALIZERS = ("none", "mean_sq_norm", "batch_var")
B_DEC_INITS = ("zeros", "mean", "geometric_median")
NORMALIZE_MODES = ("none", "expected_average_only_in", "unit_mean_sq")


@dataclass(frozen=True)
class SAEConfig:
    """Everything that defines one SAE (architecture, widths, loss convention, hook metadata)."""

    architecture: str
    """Registry name: standard, gated, lp, topk, batchtopk, jumprelu, matryoshka."""
    d_in: int
    """Input width d (d_model or sublayer width)."""
    d_sae: int
    """Dictionary width n."""
    k: int | None = None
    """Active latents per token (topk, batchtopk, matryoshka)."""
    l1_coefficient: float = 1e-3
    """Sparsity coefficient lambda (its meaning depends on recon_reduction/recon_normalizer, spec §2.0)."""
    p: float = 1.0
    """Exponent of the L_p penalty (lp architecture); p=0.5 is the sqrt penalty."""
    recipe: str = ""
    """Preset within an architecture: standard {bricken, april2024}; gated {paper, paper_exact, april};
    jumprelu {paper, saelens}; lp {anneal, fixed}. Empty picks the architecture's default."""
    weight_by_decoder_norm: bool | None = None
    """Multiply each latent's penalty by ||d_i|| (None: recipe default)."""
    unit_norm_decoder: bool | None = None
    """Hold decoder rows at unit norm with the projected Adam step (None: recipe default)."""
    resample_dead: bool | None = None
    """Bricken-style dead-latent resampling (None: recipe default)."""
    recon_reduction: str = "sum"
    """sum: sum over d, mean over tokens; mean: also divide by d."""
    recon_normalizer: str = "none"
    """none | mean_sq_norm (divide by E||x||^2) | batch_var (divide by sum ||x - xbar||^2 / B)."""
    apply_b_dec_to_input: bool | None = None
    """Encoder sees x - b_dec (None: recipe default; april2024 -> false)."""
    b_dec_init: str | None = None
    """zeros | mean | geometric_median, computed by the trainer on the first batch (None: geometric_median
    for the TopK family, zeros otherwise)."""
    normalize_activations: str | None = None
    """Dataset-level input normalisation none | expected_average_only_in | unit_mean_sq (spec §3.5); the
    trainer estimates the scale and folds it into the weights (None: recipe default)."""
    init_decoder_norm: float | None = None
    """Norm of each initial decoder row (None: 0.1 for april2024, else 1)."""
    tie_init: bool = True
    """Initialise W_enc = W_dec^T (spec §2.2 deviation for gated; standard for topk/april)."""
    # --- L_p / p-annealing (spec §2.3) ---
    penalty: str = "lp"
    """lp: lambda sum_i w_i f_i^p ; lp_norm: lambda (sum_i |w_i f_i|^p)^(1/p) (SAELens semantics)."""
    p_end: float = 0.2
    """Final p of the annealing schedule."""
    anneal_start: int | None = None
    """Step at which p starts falling from p (initial) to p_end (None: anneal_start_frac of the run)."""
    anneal_start_frac: float = 0.5
    """p-annealing starts after this fraction of the training steps when anneal_start is None, so a run of
    any length anneals (dictionary_learning's fixed step 15,000 never arrives in a short run)."""
    n_sparsity_updates: int = 10
    """Number of discrete p changes."""
    anneal_q: int = 10
    """Number of recent batches whose penalty sums drive the lambda rescale."""
    allow_fixed_p: bool = False
    """Allow p < 1 without annealing (unstable; logs a warning)."""
    p_anneal: bool | None = None
    """Anneal p from p to p_end (Karvonen et al. 2024 §4.3); None: on for lp/anneal and gated/anneal."""
    lp_eps: float = 0.0
    """epsilon-smoothed penalty (f + eps)^p - eps^p; 0 disables."""
    # --- TopK family (spec §2.4-2.5, 2.7) ---
    aux_k: int | None = None
    """k_aux for AuxK (None: d_in // 2)."""
    aux_k_coefficient: float = 1 / 32
    """alpha of the AuxK loss (Gao et al. 2024)."""
    threshold_estimator: str = "saelens"
    """BatchTopK theta EMA: saelens (rate 0.01, float64) | dictionary_learning (beta 0.999 from step 1000)."""
    matryoshka_widths: tuple[int, ...] = ()
    """Nested prefix widths M_1 < ... < M_L = d_sae (empty: d_sae/16, /8, /4, /2 and d_sae)."""
    # --- JumpReLU (spec §2.6) ---
    bandwidth: float | None = None
    """Rectangle-kernel bandwidth epsilon of the STE (None: 0.001 paper, 0.05 saelens)."""
    threshold_init: float | None = None
    """Initial theta (None: 0.001 paper, 0.01 saelens)."""
    threshold_param: str | None = None
    """What Adam trains for theta: linear (theta itself, held >= 0; SAELens, dictionary_learning) | log (log theta,
    the paper's pseudo-code: Adam then moves theta by a factor of at most ~e^lr per step). None: linear."""
    tanh_scale: float = 4.0
    """c of the jumprelu/tanh sparsity lambda sum tanh(c f_i ||d_i||) (Anthropic, Jan 2025)."""
    pre_act_coefficient: float = 3e-6
    """lambda_P of the jumprelu/tanh pre-activation loss on dead latents."""
    # --- Gated (spec §2.2) ---
    aux_mode: str | None = None
    """Gated auxiliary decoder: frozen (paper) | unfrozen_aux | frozen_penalty_norm (None: recipe default)."""
    # --- hook metadata (written to cfg.json) ---
    model: str = ""
    """Model id the activations come from."""
    hook_layer: int = -1
    """Layer index of the hook."""
    hook_point: str = "block_out"
    """Hook address (spec §3.1, e.g. resid_post.6)."""
    context_size: int = 128
    """Tokens per context window used for the activations."""
    dtype: str = "float32"
    """Parameter dtype written to cfg.json (parameters live in fp32)."""
    input_scale: float = 1.0
    """Dataset-level normalisation factor s the SAE expects inputs multiplied by (1 = raw)."""
    seed: int = 0
    """Seed of the parameter initialisation."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Free-form provenance (written under metadata.alignlab)."""

    def __post_init__(self) -> None:
        from alignlab.sae.registry import resolve_defaults

        if self.d_in < 1 or self.d_sae < 1:
            raise AlignlabError(f"SAE widths must be positive (got d_in={self.d_in}, d_sae={self.d_sae})")
        if self.k is not None and not 1 <= self.k <= self.d_sae:
            raise AlignlabError(f"k={self.k} must be in [1, d_sae={self.d_sae}]; pass a smaller --k")
        if self.recon_reduction not in RECON_REDUCTIONS:
            raise AlignlabError(f"recon_reduction must be one of {RECON_REDUCTIONS}, got {self.recon_reduction!r}")
        if self.recon_normalizer not in RECON_NORMALIZERS:
            raise AlignlabError(
                f"recon_normalizer must be one of {RECON_NORMALIZERS}, got {self.recon_normalizer!r}"
            )
        if self.b_dec_init is not None and self.b_dec_init not in B_DEC_INITS:
            raise AlignlabError(f"b_dec_init must be one of {B_DEC_INITS}, got {self.b_dec_init!r}")
        if self.normalize_activations is not None and self.normalize_activations not in NORMALIZE_MODES:
            raise AlignlabError(
                f"normalize_activations must be one of {NORMALIZE_MODES}, got {self.normalize_activations!r}"
            )
        if self.l1_coefficient < 0 or not math.isfinite(self.l1_coefficient):
            raise AlignlabError(f"l1_coefficient must be finite and >= 0, got {self.l1_coefficient}")
        if not math.isfinite(self.input_scale) or self.input_scale <= 0:
            raise AlignlabError(f"input_scale must be finite and > 0, got {self.input_scale}")
        resolve_defaults(self)  # architecture-specific validation + recipe defaults (fills None fields)

    def replace(self, **changes: Any) -> SAEConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["matryoshka_widths"] = list(self.matryoshka_widths)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "matryoshka_widths" in kw:
            kw["matryoshka_widths"] = tuple(kw["matryoshka_widths"])
        return cls(**kw)


@dataclass
class TrainState:
    """What the trainer passes to ``SAE.loss`` each step (all schedules resolved for this step)."""

    step: int = 0
    """0-based optimiser step."""
    l1_coefficient: float | None = None
    """Current lambda (warm-up and p-annealing applied); None -> cfg.l1_coefficient."""
    p: float | None = None
    """Current p of the L_p penalty; None -> cfg.p."""
    dead_mask: Tensor | None = None
    """[d_sae] bool, latents currently counted dead (AuxK); None -> no AuxK term."""
    total_steps: int | None = None
    """Length of the run (the BatchTopK theta estimate averages over its final 10%); None: unknown."""

    def lam(self, cfg: SAEConfig) -> float:
        return cfg.l1_coefficient if self.l1_coefficient is None else self.l1_coefficient

    def p_now(self, cfg: SAEConfig) -> float:
        return cfg.p if self.p is None else self.p


class LossOutput(NamedTuple):
    total: Tensor
    """Scalar training loss."""
    terms: dict[str, Tensor]
    """Named scalar terms (detached-safe to log), e.g. {"mse": ..., "l1": ...}."""
    feats: Tensor
    """[B, d_sae] latent codes f (for L0 / dead-latent tracking)."""
    x_hat: Tensor
    """[B, d_in] reconstruction."""
    penalty_acts: Tensor | None = None
    """[B, d_sae] the activations the sparsity penalty is applied to when they differ from feats
    (gated: ReLU(pi_gate)); p-annealing rescales lambda from these."""


# ---------------------------------------------------------------------------------------------
# Shared kernels
# ---------------------------------------------------------------------------------------------


class _CenteredLinear(torch.autograd.Function):
    """u = (x - b) @ W + c with the b-gradient batch-reduced first: db = -W @ (sum_b g) (spec §9.1).

    Autograd through ``(x - b) @ W`` would form the full [B, d] input gradient (2*B*d*n FLOPs) and then
    sum it; this forms one [d, n] x [n] product instead. No gradient w.r.t. x is produced (x is data).
    Backward runs in the dtype of the incoming gradient (bf16 under autocast) and returns parameter dtypes.
    """

    @staticmethod
    def forward(ctx, x: Tensor, b: Tensor, w: Tensor, c: Tensor | None) -> Tensor:  # type: ignore[override]
        xc = x - b  # [B, d_in]
        u = xc @ w if c is None else torch.addmm(c.to(xc.dtype), xc, w.to(xc.dtype))  # [B, d_sae]
        ctx.save_for_backward(xc, w)
        ctx.has_c = c is not None
        return u

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        xc, w = ctx.saved_tensors
        gw = (xc.to(g.dtype).t() @ g).to(w.dtype) if ctx.needs_input_grad[2] else None  # [d_in, d_sae]
        gsum = g.sum(0, dtype=torch.float32 if g.dtype != torch.float64 else torch.float64)  # [d_sae]
        gb = -(w @ gsum.to(w.dtype)) if ctx.needs_input_grad[1] else None  # [d_in]
        gc = gsum.to(w.dtype) if ctx.has_c and ctx.needs_input_grad[3] else None
        return None, gb, gw, gc


def centered_linear(x: Tensor, b: Tensor | None, w: Tensor, c: Tensor | None = None) -> Tensor:
    """Encoder pre-activation ``(x - b) @ w + c`` ([B, d_in] -> [B, d_sae]); ``b``/``c`` may be None."""
    if b is None or x.requires_grad:
        xc = x if b is None else x - b
        return xc @ w if c is None else torch.addmm(c, xc, w) if xc.dtype == w.dtype else xc @ w + c
    return _CenteredLinear.apply(x, b, w, c)


@torch.no_grad()
def geometric_median(x: Tensor, iters: int = 100, eps: float = 1e-8) -> Tensor:
    """Weiszfeld iterations for the geometric median of the rows of ``x`` ([N, d] -> [d]); deterministic."""
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(eps)  # [N]
        y_new = (w[:, None] * x).sum(0) / w.sum()
        done = bool((y_new - y).norm() <= 1e-7 * (y.norm() + eps))
        y = y_new
        if done:
            break
    return y


def recon_error(x: Tensor, x_hat: Tensor, cfg: SAEConfig) -> Tensor:
    """Reconstruction loss with the explicit convention of spec §2.0 (scalar)."""
    per_tok = (x_hat - x).pow(2).sum(-1)  # [B]
    loss = per_tok.mean()
    if cfg.recon_reduction == "mean":
        loss = loss / x.shape[-1]
    if cfg.recon_normalizer == "mean_sq_norm":
        loss = loss / x.detach().pow(2).sum(-1).mean().clamp_min(1e-12)
    elif cfg.recon_normalizer == "batch_var":
        xd = x.detach()
        loss = loss / (xd - xd.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    return loss


class SAE(torch.nn.Module):
    """Base class. Subclasses set ``W_enc`` [d_in, d_sae], ``W_dec`` [d_sae, d_in], ``b_dec`` [d_in]."""

    cfg: SAEConfig
    #: names of the tensors written to sae_weights.safetensors (SAELens v6 layout)
    saelens_architecture: str = "standard"

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, n = cfg.d_in, cfg.d_sae
        self.W_enc = torch.nn.Parameter(torch.empty(d, n))
        self.W_dec = torch.nn.Parameter(torch.empty(n, d))
        self.b_dec = torch.nn.Parameter(torch.zeros(d))

    # ----- config hooks (called from SAEConfig.__post_init__ via the registry) -----
    @classmethod
    def resolve(cls, cfg: SAEConfig) -> dict[str, Any]:
        """Recipe defaults for the config's ``None`` fields; raise AlignlabError for a bad recipe."""
        return {}

    @classmethod
    def validate(cls, cfg: SAEConfig) -> None:
        """Architecture-specific checks after defaults are filled in."""

    # ----- interface -----
    def encode(self, x: Tensor) -> Tensor:  # [B, d_in] -> [B, d_sae]
        raise NotImplementedError

    def decode(self, f: Tensor) -> Tensor:  # [B, d_sae] -> [B, d_in]
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:  # [B, d_in] -> [B, d_in]
        return self.decode(self.encode(x))

    def loss(self, x: Tensor, state: TrainState) -> LossOutput:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self) -> None:
        """Called after every optimiser step: renormalise decoder rows when the recipe constrains them."""
        if self.cfg.unit_norm_decoder:
            self.normalize_decoder_()

    # ----- shared helpers -----
    @property
    def constrained_params(self) -> list[Tensor]:
        """Parameters whose rows are held at unit norm (projected Adam step, spec §2.1)."""
        return [self.W_dec] if self.cfg.unit_norm_decoder else []

    def b_dec_for_input(self) -> Tensor | None:
        return self.b_dec if self.cfg.apply_b_dec_to_input else None

    def decoder_norms(self) -> Tensor:  # [d_sae]
        return self.W_dec.norm(dim=1)

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def init_weights_(self, generator: torch.Generator | None = None) -> None:
        """Default init: random unit (or init_decoder_norm) decoder rows, W_enc = W_dec^T, zero biases."""
        g = generator or torch.Generator().manual_seed(self.cfg.seed)
        w = torch.randn(self.cfg.d_sae, self.cfg.d_in, generator=g)
        w = w / w.norm(dim=1, keepdim=True) * (self.cfg.init_decoder_norm or 1.0)
        self.W_dec.copy_(w)
        if self.cfg.tie_init:
            self.W_enc.copy_(w.t())
        else:
            bound = 1 / math.sqrt(self.cfg.d_in)
            self.W_enc.uniform_(-bound, bound, generator=g)
        for name, p in self.named_parameters():
            if name.startswith("b_") or name == "r_mag":
                p.zero_()

    def saelens_tensors(self) -> dict[str, Tensor]:
        """Tensors in the SAELens v6 layout for ``saelens_architecture`` (the forward is preserved)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def load_saelens_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.load_state_dict(tensors, strict=True)

    def saelens_cfg_extra(self) -> dict[str, Any]:
        """Architecture-specific top-level cfg.json fields (e.g. k)."""
        return {}


class _BoundMethod(torch.nn.Module):
    def __init__(self, sae: SAE, method: str) -> None:
        super().__init__()
        self.sae, self.method = sae, method

    def forward(self, *args: Any) -> Any:
        return getattr(self.sae, self.method)(*args)


def call_with_params(sae: SAE, params: dict[str, Tensor], method: str, *args: Any) -> Any:
    """``sae.<method>(*args)`` (encode / decode / forward / loss) as a pure function of a parameter dict
    (spec §2.0), via torch.func.functional_call; ``sae``'s own parameters are left untouched."""
    from torch.func import functional_call

    return functional_call(_BoundMethod(sae, method), {f"sae.{k}": v for k, v in params.items()}, args)


def build_sae(cfg: SAEConfig) -> SAE:
    """Instantiate and initialise the architecture named by ``cfg.architecture`` (see registry.REGISTRY)."""
    from alignlab.sae.registry import build_sae as _build

    return _build(cfg)


def save_sae(sae: SAE, directory: Any) -> None:
    """Write ``sae`` as a SAELens v6 folder (cfg.json + sae_weights.safetensors), atomically."""
    from alignlab.sae.saelens_format import save_sae as _save

    _save(sae, directory)


def load_sae(directory: Any, *, expect: SAEConfig | None = None) -> SAE:
    """Read a SAELens v6 (or pre-6.0) folder back into an alignlab SAE; a truncated or corrupt safetensors
    file is one AlignlabError naming the folder (issue 12), not a traceback."""
    from safetensors import SafetensorError

    from alignlab.sae.saelens_format import load_sae as _load

    try:
        return _load(directory, expect=expect)
    except SafetensorError as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise AlignlabError(f"SAE folder {directory} holds a truncated or corrupt safetensors file ({reason}); "
                            "copy it again or retrain") from None
