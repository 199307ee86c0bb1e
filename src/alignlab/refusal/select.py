"""Select the refusal direction among all (position, layer) candidates (spec §2.7).

Scores per candidate on the validation prompts:
- bypass: mean refusal score on harmful val with the candidate ablated everywhere (lower is better);
- kl: mean first-token KL(base || ablated) on harmless val (bypass and kl share one pass);
- induce: mean refusal score on harmless val with +r added at resid_pre[l] (run from layer l only).
A cheap screening pass scores every candidate on ``screen_n`` prompts per side (bfloat16 matmuls where the
hardware has them; induce is skipped where the screening KL already exceeds twice kl_max, which ranks a
candidate last whatever its induce score); the ``full_k`` best then get full scoring on the whole val set.
Filters kl <= kl_max and induce > induce_min; the pick is argmin bypass, ties -> lower kl -> lower layer.
No ``generate`` call happens here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from alignlab.errors import AlignlabError
from alignlab.models.anatomy import map_model
from alignlab.models.chat import ChatFormat
from alignlab.models.precision import bf16_autocast
from alignlab.progress import progress
from alignlab.refusal.config import SelectConfig
from alignlab.refusal.forward import COUNTER, last_logprobs
from alignlab.refusal.intervene import ablate, add_direction
from alignlab.refusal.prefix import PrefixCache
from alignlab.refusal.score import first_token_kl, refusal_score
from alignlab.refusal.shared_prefix import SharedPrefix


@dataclass
class Candidate:
    position: int
    """Negative index from the end of the prompt (-n_eoi .. -1)."""
    layer: int
    bypass: float = math.nan
    induce: float = math.nan
    kl: float = math.nan
    stage: str = "pruned"
    """pruned | screened | full"""

    def passes(self, cfg: SelectConfig) -> bool:
        finite = all(math.isfinite(v) for v in (self.bypass, self.induce, self.kl))
        return finite and self.kl <= cfg.kl_max and self.induce > cfg.induce_min

    def key(self) -> tuple[float, float, int]:
        return (self.bypass, self.kl, self.layer)


@dataclass
class Selection:
    candidates: list[Candidate]
    chosen: Candidate
    baseline_harmful: float
    baseline_harmless: float
    forwards: int
    generates: int
    n_layers: int
    n_pos: int
    relaxed: bool = False
    notes: list[str] = field(default_factory=list)

    def grid(self, metric: str) -> list[list[float]]:
        """[n_pos][n_layers] table of one metric (NaN where not scored), for heat-maps."""
        return grid_of(self.candidates, self.n_pos, self.n_layers, metric)


def grid_of(cands: Sequence[Candidate], n_pos: int, n_layers: int, metric: str) -> list[list[float]]:
    """[n_pos][n_layers] table of one metric over ``cands`` (NaN where not scored)."""
    table = [[math.nan] * n_layers for _ in range(n_pos)]
    for c in cands:
        table[c.position + n_pos][c.layer] = getattr(c, metric)
    return table


class _Scorer:
    """Scores candidates on one (harmful, harmless) prompt pair, reusing one encoding and one prefix cache."""

    def __init__(self, model, fmt: ChatFormat, harmful: Sequence[str], harmless: Sequence[str], ids, batch: int):
        self.model, self.ids = model, list(ids)
        self.anatomy = map_model(model)
        device = next(model.parameters()).device
        self.enc_all = fmt.encode(list(harmful) + list(harmless), device=device, strict=False)
        self.n_h = sum(1 for i in self.enc_all.kept if i < len(harmful))
        kept_harmless = [i - len(harmful) for i in self.enc_all.kept if i >= len(harmful)]
        self.enc_harmless = fmt.encode([harmless[i] for i in kept_harmless], device=device, strict=False)
        self.shared = SharedPrefix(model, self.enc_all)  # the template's prefix runs once per forward
        base_all = self.shared.baseline
        self.base_harmless = base_all[self.n_h:]
        self.baseline_harmful = float(refusal_score(base_all[: self.n_h], self.ids).mean())
        self.baseline_harmless = float(refusal_score(self.base_harmless, self.ids).mean())
        # the harmless rows' base log-probs are known already: the prefix cache is checked against them
        same_rows = len(self.enc_harmless.kept) == len(kept_harmless)
        self.prefix = PrefixCache(model, self.anatomy, self.enc_harmless,
                                  baseline=self.base_harmless if same_rows else None)

    def score(self, cand: Candidate, r: torch.Tensor, induce_kl_max: float = math.inf) -> None:
        """Bypass and KL (one ablated forward), then induce unless KL already exceeds ``induce_kl_max``."""
        direction = r[cand.position, cand.layer].float()
        with ablate(self.model, direction, self.anatomy):
            lp = self.shared.last_logprobs()
        cand.bypass = float(refusal_score(lp[: self.n_h], self.ids).mean())
        cand.kl = float(first_token_kl(self.base_harmless, lp[self.n_h:]).mean())
        if not cand.kl <= induce_kl_max:  # fails the filter whatever its induce score: not computed (NaN)
            return
        if self.prefix.ok:
            lp_add = self.prefix.logprobs_added(cand.layer, direction)
        else:
            with add_direction(self.model, direction, cand.layer, 1.0, self.anatomy):
                lp_add = last_logprobs(self.model, self.enc_harmless)
        cand.induce = float(refusal_score(lp_add, self.ids).mean())


class NoSurvivorError(AlignlabError):
    """No candidate passes RD's filters; ``finalists`` holds the fully scored candidates."""

    def __init__(self, message: str, finalists: list[Candidate]) -> None:
        super().__init__(message)
        self.finalists = finalists
        self.grids: dict[str, list[list[float]]] = {}
        """bypass / induce / kl heat-map tables of every candidate, set by ``select_direction``."""


def filter_candidates(finalists: Sequence[Candidate], cfg: SelectConfig) -> tuple[list[Candidate], bool]:
    """Survivors of kl <= kl_max and induce > induce_min (finite scores); with ``on_empty="relax"`` and no
    survivor, the KL filter alone. Raises, listing the 10 lowest-bypass candidates, when nothing survives."""
    survivors = [c for c in finalists if c.passes(cfg)]
    if survivors:
        return survivors, False
    if cfg.on_empty == "relax":
        survivors = [c for c in finalists if math.isfinite(c.bypass) and c.kl <= cfg.kl_max]
        if survivors:
            return survivors, True
    best = sorted(finalists, key=lambda c: c.bypass)[:10]
    listing = "; ".join(f"(pos {c.position}, layer {c.layer}) bypass {c.bypass:.2f} kl {c.kl:.3f} "
                        f"induce {c.induce:.2f}" for c in best)
    raise NoSurvivorError(f"no candidate passes kl <= {cfg.kl_max} and induce > {cfg.induce_min}: {listing} "
                          "(use --select search or auto, loosen --kl-max/--induce-min, or --on-empty relax)",
                          list(finalists))


def pick(survivors: Sequence[Candidate]) -> Candidate:
    """argmin bypass; ties -> lower kl -> lower layer (spec §2.7)."""
    return min(survivors, key=Candidate.key)


def select_direction(
    model: torch.nn.Module,
    fmt: ChatFormat,
    r: torch.Tensor,
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    refusal_ids: Sequence[int],
    cfg: SelectConfig | None = None,
) -> Selection:
    """Score candidates r [n_pos, n_layers, d] and pick one. Raises if none survives the filters."""
    cfg = cfg or SelectConfig()
    n_pos, n_layers, _ = r.shape
    if not harmful_val or not harmless_val:
        raise AlignlabError("empty validation prompt set: selection needs harmful and harmless val prompts")
    start_forwards, start_generates = COUNTER.forwards, COUNTER.generates
    max_layer = int(n_layers * (1 - cfg.prune_frac))
    cands = [Candidate(p - n_pos, layer) for layer in range(n_layers) for p in range(n_pos)]
    live = [c for c in cands if c.layer < max_layer]
    full = _Scorer(model, fmt, harmful_val, harmless_val, refusal_ids, cfg.batch_size)
    if 0 < cfg.screen_n < max(len(harmful_val), len(harmless_val)) and cfg.full_k < len(live):
        screen = _Scorer(model, fmt, harmful_val[: cfg.screen_n], harmless_val[: cfg.screen_n], refusal_ids,
                         cfg.batch_size)
        loose = SelectConfig(kl_max=2 * cfg.kl_max, induce_min=cfg.induce_min - 1.0)
        with bf16_autocast(model, cfg.screen_bf16):  # ranking only: the pick is made on full-precision scores
            for cand in progress(live, "screen candidates", unit="candidate"):
                screen.score(cand, r, induce_kl_max=loose.kl_max)  # above it, ranked last whatever induce is
                cand.stage = "screened"
        ranked = sorted(live, key=lambda c: (not c.passes(loose), c.key()))
        finalists = ranked[: cfg.full_k]
    else:
        finalists = live
    for cand in progress(finalists, "score candidates", unit="candidate"):
        full.score(cand, r)
        cand.stage = "full"
    try:
        survivors, relaxed = filter_candidates(finalists, cfg)
    except NoSurvivorError as exc:  # the report still shows what screening and scoring found
        exc.grids = {m: grid_of(cands, n_pos, n_layers, m) for m in ("bypass", "induce", "kl")}
        raise
    screening_generates = COUNTER.generates - start_generates
    chosen = pick(survivors)
    notes: list[str] = []
    if cfg.confirm_k > 0:
        chosen, notes = _confirm(model, fmt, r, sorted(survivors, key=Candidate.key)[: cfg.confirm_k],
                                 harmful_val, cfg)
    return Selection(
        candidates=cands, chosen=chosen, baseline_harmful=full.baseline_harmful,
        baseline_harmless=full.baseline_harmless, forwards=COUNTER.forwards - start_forwards,
        generates=screening_generates, n_layers=n_layers, n_pos=n_pos, relaxed=relaxed, notes=notes,
    )


def _confirm(model, fmt: ChatFormat, r: torch.Tensor, top: list[Candidate], harmful_val: Sequence[str],
             cfg: SelectConfig) -> tuple[Candidate, list[str]]:
    """Greedy generation on harmful val for the top survivors: lowest substring refusal rate wins (ties keep
    screening order); a candidate more degenerate than the baseline by > 5 points is disqualified."""
    from alignlab.refusal.confirm import confirm_replies
    from alignlab.refusal.judge import SubstringJudge

    judge = SubstringJudge("rd")
    texts = list(harmful_val)

    def run(context) -> tuple[float, float]:
        c = confirm_replies(model, fmt, judge, texts, cfg.confirm_tokens, context, cfg.batch_size)
        return c.refusal, c.degenerate

    from contextlib import nullcontext

    _, base_degenerate = run(nullcontext())
    results = []
    notes = []
    for cand in top:
        refusal, degenerate = run(ablate(model, r[cand.position, cand.layer].float()))
        notes.append(f"confirm (pos {cand.position}, layer {cand.layer}): refusal {refusal:.2f}, "
                     f"degenerate {degenerate:.2f} (baseline {base_degenerate:.2f})")
        if degenerate <= base_degenerate + 0.05:
            results.append((refusal, len(results), cand))
    if not results:
        return top[0], [*notes, "every confirmed candidate was degenerate; kept the screening pick"]
    return min(results, key=lambda t: (t[0], t[1]))[2], notes


def chosen_direction(r: torch.Tensor, cand: Candidate) -> torch.Tensor:
    """The selected raw direction r[p, l]: [d] float64."""
    return r[cand.position, cand.layer]

