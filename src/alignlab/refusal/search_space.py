"""The search space of the refusal/KL trade-off (issue 13 §1-2): a kernel of ablation weights per component
and a float direction index, and the cheap per-trial objectives (multi-token refusal, first-token KL).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from alignlab.config import check_finite
from alignlab.errors import AlignlabError
from alignlab.models.chat import ChatFormat
from alignlab.refusal.score import first_token_kl
from alignlab.refusal.shared_prefix import SharedPrefix
from alignlab.refusal.weights import COMPONENTS, Kernel, LayerWeights, ablate_weighted, interpolate_direction


@dataclass(frozen=True)
class SearchConfig:
    trials: int = 48
    """Optuna trials (multivariate TPE, seeded). Rerun with more to add trials to the stored study."""
    seed: int = 0
    """Seed of the sampler (trial i is sampled with seed + i, so a resumed search equals an uninterrupted one)."""
    startup_trials: int = 12
    """Random trials before TPE models the history."""
    refusal_target: float = 0.05
    """Chosen point: lowest KL among confirmed points whose harmful-val refusal is at most this."""
    n_prompts: int = 32
    """Harmful and harmless val prompts scored per trial."""
    prefix_tokens: int = 6
    """Greedy tokens per harmful prompt in the per-trial refusal check (one token cannot tell 'I'm sorry' from
    'I'd love to')."""
    confirm_k: int = 4
    """Pareto points confirmed by generation on harmful val."""
    confirm_tokens: int = 128
    """New tokens per confirmation reply (short replies undercount refusals)."""
    direction: Literal["interpolate", "fixed"] = "interpolate"
    """Direction: a float layer index interpolating neighbouring candidates, or the fixed RD-best layer."""
    ablate_embedding: bool = True
    """Also search a weight for the embedding (block 0 input)."""

    def __post_init__(self) -> None:
        check_finite(self, "refusal_target")
        if self.trials < 1 or self.n_prompts < 1 or self.prefix_tokens < 1 or self.confirm_tokens < 1:
            raise AlignlabError("--trials, --n-prompts, --prefix-tokens and --confirm-tokens must be >= 1")
        if self.startup_trials < 0 or self.confirm_k < 1:
            raise AlignlabError("--startup-trials must be >= 0 and --confirm-k >= 1")
        if not 0 <= self.refusal_target <= 1:
            raise AlignlabError("--refusal-target must lie in [0, 1]")
        if self.direction not in ("interpolate", "fixed"):
            raise AlignlabError("--direction must be interpolate or fixed")


@dataclass(frozen=True)
class Point:
    """One point of the search space, decoded from a trial's parameters."""

    weights: LayerWeights
    direction_index: float
    params: dict[str, float]

    def layer(self) -> int:
        """The layer whose activations the direction lives in (activation addition uses it)."""
        return int(round(self.direction_index))


def distributions(n_layers: int, max_layer: int, cfg: SearchConfig) -> dict[str, Any]:
    """Optuna distributions; the direction index stays below ``max_layer`` (RD's pruning of late layers)."""
    from optuna.distributions import FloatDistribution

    top = float(n_layers - 1)
    space: dict[str, Any] = {}
    for comp in COMPONENTS:
        space[f"{comp}_max"] = FloatDistribution(0.2, 1.0)
        space[f"{comp}_peak"] = FloatDistribution(0.0, top)
        space[f"{comp}_min_frac"] = FloatDistribution(0.0, 1.0)
        space[f"{comp}_falloff"] = FloatDistribution(1.0, float(n_layers))
    if cfg.ablate_embedding:
        space["embed"] = FloatDistribution(0.0, 1.0)
    if cfg.direction == "interpolate":
        space["direction_index"] = FloatDistribution(0.0, float(max(max_layer - 1, 0)))
    return space


def full_ablation_params(n_layers: int, cfg: SearchConfig, layer: int) -> dict[str, float]:
    """Every weight 1 with the RD-best direction: the known low-refusal corner, tried first."""
    params = {}
    for comp in COMPONENTS:
        params.update({f"{comp}_max": 1.0, f"{comp}_peak": (n_layers - 1) / 2, f"{comp}_min_frac": 1.0,
                       f"{comp}_falloff": float(n_layers)})
    if cfg.ablate_embedding:
        params["embed"] = 1.0
    if cfg.direction == "interpolate":
        params["direction_index"] = float(layer)
    return params


def decode(params: dict[str, float], n_layers: int, fixed_layer: int) -> Point:
    kernels = {}
    for comp in COMPONENTS:
        top = params[f"{comp}_max"]
        kernels[comp] = Kernel(max_weight=top, peak=params[f"{comp}_peak"],
                               min_weight=top * params[f"{comp}_min_frac"], falloff=params[f"{comp}_falloff"])
    weights = LayerWeights.from_kernels(n_layers, kernels["attn"], kernels["mlp"], params.get("embed", 0.0))
    return Point(weights, float(params.get("direction_index", fixed_layer)), dict(params))


class TrialScorer:
    """Scores a point on a fixed set of val prompts: refusal on harmful (a few greedy tokens, substring judge)
    and mean first-token KL(base || intervened) on harmless."""

    def __init__(self, model: torch.nn.Module, fmt: ChatFormat, r: torch.Tensor, position: int,
                 harmful: list[str], harmless: list[str], cfg: SearchConfig) -> None:
        from alignlab.models.anatomy import map_model
        from alignlab.refusal.judge import SubstringJudge

        self.model, self.fmt, self.r, self.position, self.cfg = model, fmt, r, position, cfg
        self.anatomy = map_model(model)
        self.harmful, self.harmless = harmful[: cfg.n_prompts], harmless[: cfg.n_prompts]
        device = next(model.parameters()).device
        self.enc_harmless = fmt.encode(self.harmless, device=device, strict=False)
        self.shared = SharedPrefix(model, self.enc_harmless)  # the template's prefix runs once per forward
        self.base = self.shared.baseline  # [n, vocab]
        self.judge = SubstringJudge("rd")

    def direction(self, point: Point) -> torch.Tensor:
        return interpolate_direction(self.r, self.position, point.direction_index).float()

    def score(self, point: Point) -> tuple[float, float]:
        from alignlab.models.generate import generate_greedy

        d = self.direction(point)
        if not math.isfinite(float(d.norm())) or float(d.norm()) == 0.0:
            raise AlignlabError("the interpolated direction is zero or not finite")
        with ablate_weighted(self.model, d, point.weights, self.anatomy):
            lp = self.shared.last_logprobs()
            replies = generate_greedy(self.model, self.fmt, self.harmful, self.cfg.prefix_tokens,
                                      len(self.harmful), progress=False)
        kl = float(first_token_kl(self.base, lp).mean())
        verdicts = self.judge.judge(self.harmful, [x.text for x in replies])
        refusal = sum(v.label == "refusal" for v in verdicts) / len(verdicts)
        return refusal, kl
