"""The ``subspace`` stage (issue 15): when one direction does not carry refusal, grow it into a few directions
ablated together.

Some models keep refusing after the best single direction is ablated: on the shipped Gemma-3 organism the best
of all 90 rank-1 candidates still refuses 5/24 harmful val prompts. The stage starts from RD's pick (a fully
ablated direction; after the search's weighted pick it starts from nothing) and adds, one at a time, the
difference-of-means candidate (any position, any layer: RD's late-layer pruning does not apply) whose joint
ablation gives the lowest refusal score on harmful val while first-token KL on harmless val stays within
``kl_max`` (every candidate screened on a few prompts, the best ``full_k`` scored on all); after each addition it
generates replies to the harmful val prompts and stops once the judged refusal rate is at most ``target`` (auto)
or the rank is reached. The subspace is ablated fully (x <- x - Q(Qᵀx) at every block input and
write) and baked in as W <- W - Q(QᵀW): one exact rank-1 edit per orthonormal basis vector.

Artifacts: ``subspace.json`` (every step: the added candidate, its scores, the confirmed rate) and
``subspace.safetensors`` (the raw directions, ``directions`` [k, d]).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from alignlab.errors import AlignlabError
from alignlab.refusal.artifacts import key_of
from alignlab.refusal.config import SubspaceConfig
from alignlab.refusal.intervention import Intervention
from alignlab.refusal.pipeline import RunState, _timed
from alignlab.refusal.prompts import PromptSets

MIN_NEW_FRACTION = 0.05
"""A candidate whose part outside the current span is below this fraction of its norm adds nothing: skipped."""


class _StepScorer:
    """Scores a set of directions under rank-k ablation (refusal score on harmful val, first-token KL on harmless
    val; one forward of both sets), on a screening subset or on all prompts; confirms by greedy generation."""

    def __init__(self, state: RunState, harmful: list[str], harmless: list[str], ids: Sequence[int],
                 screen_n: int) -> None:
        from alignlab.models.anatomy import map_model
        from alignlab.refusal.judge import SubstringJudge

        assert state.lm is not None and state.fmt is not None
        self.model, self.fmt, self.ids = state.lm.model, state.fmt, list(ids)
        self.anatomy = map_model(self.model)
        self.harmful, self.judge = harmful, SubstringJudge(state.cfg.eval.judge)
        self.sets = {"full": self._prepare(harmful, harmless, state.lm.device),
                     "screen": self._prepare(harmful[:screen_n], harmless[:screen_n], state.lm.device)}

    def _prepare(self, harmful: list[str], harmless: list[str], device: Any) -> tuple[Any, int, torch.Tensor]:
        from alignlab.refusal.shared_prefix import SharedPrefix

        enc = self.fmt.encode(harmful + harmless, device=device, strict=False)
        n_h = sum(1 for i in enc.kept if i < len(harmful))
        shared = SharedPrefix(self.model, enc)  # the template's prefix runs once per forward
        return shared, n_h, shared.baseline[n_h:]  # base log-probs on harmless [n, vocab]

    def score(self, directions: torch.Tensor, which: str = "full") -> tuple[float, float]:
        from alignlab.refusal.intervene import ablate_subspace
        from alignlab.refusal.score import first_token_kl, refusal_score

        shared, n_h, base = self.sets[which]
        with ablate_subspace(self.model, directions.float(), self.anatomy):
            lp = shared.last_logprobs()
        return float(refusal_score(lp[:n_h], self.ids).mean()), float(first_token_kl(base, lp[n_h:]).mean())

    def confirm(self, context: Any, tokens: int) -> dict[str, Any]:
        from alignlab.refusal.confirm import confirm_replies

        c = confirm_replies(self.model, self.fmt, self.judge, self.harmful, tokens, context)
        return {"refused": c.refused, "n": c.n, "refusal": c.refusal, "degenerate": c.degenerate}


def _new_fraction(v: torch.Tensor, basis: torch.Tensor | None) -> float:
    """Norm of v's part outside the span of the orthonormal rows ``basis`` [k, d], over v's norm (1 with none)."""
    if basis is None:
        return 1.0
    v = v.double()
    rest = v - (basis @ v) @ basis
    return float(rest.norm() / v.norm().clamp_min(1e-30))


def best_addition(scorer: _StepScorer, r: torch.Tensor, members: list[torch.Tensor],
                  cfg: SubspaceConfig) -> tuple[float, float, int, int] | None:
    """(refusal score, KL, position, layer) of the candidate whose joint ablation with ``members`` has the lowest
    refusal score at KL <= kl_max: all screened, the best ``full_k`` rescored on every prompt. Deterministic:
    (position, layer) order, ties to the first. None when no candidate keeps the KL bound."""
    from alignlab.progress import progress_bar
    from alignlab.refusal.intervene import orthonormal_basis

    n_pos, n_layers = r.shape[0], r.shape[1]
    basis = orthonormal_basis(torch.stack(members), r.shape[2]) if members else None  # once per step
    screened: list[tuple[float, int, int]] = []
    with progress_bar(n_pos * n_layers, f"subspace rank {len(members) + 1}", "candidate") as update:
        for p in range(n_pos):
            for layer in range(n_layers):
                v = r[p, layer].double()
                if float(v.norm()) > 0 and _new_fraction(v, basis) >= MIN_NEW_FRACTION:
                    bypass, kl = scorer.score(torch.stack([*members, v]), "screen")
                    if math.isfinite(bypass) and kl <= cfg.kl_max:
                        screened.append((bypass, p, layer))
                update(1)
    best = None
    for _, p, layer in sorted(screened)[: cfg.full_k]:
        bypass, kl = scorer.score(torch.stack([*members, r[p, layer].double()]))
        if math.isfinite(bypass) and kl <= cfg.kl_max and (best is None or bypass < best[0]):
            best = (bypass, kl, p - n_pos, layer)
    return best


def grow(scorer: _StepScorer, r: torch.Tensor, seed: torch.Tensor | None, cfg: SubspaceConfig,
         start: dict[str, Any]) -> list[dict[str, Any]]:
    """Greedy growth over the candidates r [n_pos, n_layers, d] from ``seed`` [d] (RD's fully ablated pick; its
    confirmation ``start`` is step rank 1) or from nothing. Each step records the added candidate, its scores on
    all val prompts and the judged val refusal of the whole subspace."""
    from alignlab.refusal.intervene import ablate_subspace

    members = [] if seed is None else [seed.double()]
    steps = [] if seed is None else [{"rank": 1, "added": None, **start}]
    auto, limit = cfg.rank == 0, (cfg.max_rank if cfg.rank == 0 else cfg.rank)
    while len(members) < limit and not (auto and steps and steps[-1]["refusal"] <= cfg.target):
        best = best_addition(scorer, r, members, cfg)
        if best is None:
            print(f"subspace: no candidate keeps first-token KL <= {cfg.kl_max:g}; stopping at rank {len(members)}",
                  file=sys.stderr)
            break
        bypass, kl, pos, layer = best
        members.append(r[pos, layer].double())
        confirm = scorer.confirm(ablate_subspace(scorer.model, torch.stack(members).float(), scorer.anatomy),
                                 cfg.confirm_tokens)
        steps.append({"rank": len(members), "added": {"position": pos, "layer": layer}, "bypass": bypass, "kl": kl,
                      **confirm})
        print(f"subspace rank {len(members)}: + (pos {pos}, layer {layer}) refusal score {bypass:.2f} KL {kl:.3f}, "
              f"val refusal {confirm['refused']}/{confirm['n']}, degenerate {confirm['degenerate']:.2f}",
              file=sys.stderr, flush=True)
    return steps


def pick_step(steps: list[dict[str, Any]], start: dict[str, Any], cfg: SubspaceConfig) -> int:
    """The rank to use (0: keep the chosen intervention). Explicit rank: the last step reached. Auto: the first
    step at or under the target; else the lowest judged val refusal, the chosen intervention winning ties, then
    the lower rank."""
    if not steps:
        return 0
    if cfg.rank != 0:
        return int(steps[-1]["rank"])
    hit = [s for s in steps if s["refusal"] <= cfg.target]
    if hit:
        return int(hit[0]["rank"])
    best = min(steps, key=lambda s: (s["refusal"], s["rank"]))
    return int(best["rank"]) if best["refusal"] < start["refusal"] else 0


def stage_subspace(state: RunState, sets: PromptSets, r: torch.Tensor, ids: Sequence[int],
                   chosen: Intervention) -> Intervention:
    """The chosen intervention, or (when grown) a rank-k subspace, fully ablated."""
    cfg: SubspaceConfig = state.cfg.subspace
    if cfg.rank == 1:
        return chosen
    if chosen.affine:
        if cfg.rank > 1:
            raise AlignlabError("ACE ablates one direction around the harmless mean: drop --subspace-rank")
        return chosen
    if cfg.rank == 0 and state.cfg.export_lora:
        print("subspace: not grown (--export-lora writes a rank-1 adapter)", file=sys.stderr)
        return chosen
    if cfg.rank == 0 and chosen.method == "search" and (chosen.scores or {}).get("refusal_val", 1.0) <= cfg.target:
        return chosen  # the search's own confirmation on val already meets the target: nothing to grow
    key = key_of(state.keys["intervention"], asdict(cfg), list(ids))

    def compute() -> dict[str, Any]:
        n = cfg.n_prompts
        scorer = _StepScorer(state, sets.texts("harmful", "val")[:n], sets.texts("harmless", "val")[:n], ids,
                             cfg.screen_n)
        start = scorer.confirm(chosen.ablate(scorer.model), cfg.confirm_tokens)
        print(f"subspace: the chosen intervention ({chosen.method}) refuses {start['refused']}/{start['n']} harmful "
              f"val prompts at {cfg.confirm_tokens} tokens", file=sys.stderr, flush=True)
        seed = chosen.direction if chosen.weights is None else None
        steps = grow(scorer, r, seed, cfg, start)
        return {"start": {"method": chosen.method, "weighted": chosen.weights is not None, **start},
                "seeded": seed is not None, "steps": steps, "picked_rank": pick_step(steps, start, cfg)}

    obj = _timed(state, "subspace", state.run.load_json("subspace.json", key), compute, ("subspace.json", key))
    rank = int(obj["picked_rank"])
    if rank == 0 or (rank == 1 and obj["seeded"]):
        return chosen
    members = [s["added"] for s in obj["steps"][:rank] if s["added"] is not None]
    vectors = ([chosen.direction.double()] if obj["seeded"] else []) + [
        r[m["position"], m["layer"]].double() for m in members]
    if state.run.load_tensors("subspace.safetensors", key) is None:
        state.run.save_tensors("subspace.safetensors", key, {"directions": torch.stack(vectors)},
                               {"model": state.cfg.model, "rank": str(rank)})
    state.keys["intervention"] = key_of("subspace", key, rank)
    scores = {**(chosen.scores or {}), "subspace_rank": rank, "subspace_members": members,
              "subspace_seeded": obj["seeded"], "subspace_val_refusal": obj["steps"][rank - 1]["refusal"]}
    first = members[0] if not obj["seeded"] else {"position": chosen.position, "layer": chosen.layer}
    extra = torch.stack(vectors[1:]) if len(vectors) > 1 else None
    return dataclasses.replace(chosen, direction=vectors[0], layer=first["layer"], position=first["position"],
                               weights=None, scores=scores, extra=extra)
