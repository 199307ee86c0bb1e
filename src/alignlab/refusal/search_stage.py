"""The ``search`` stage and the choice between RD's pick and the search (``--select auto|rd|search``).

Artifacts: ``search.journal`` (the Optuna study, resumable), ``search.json`` (trials, Pareto front,
confirmations, chosen point) and ``direction.safetensors`` for the chosen direction.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict
from typing import Any

import torch

from alignlab.errors import AlignlabError
from alignlab.refusal.artifacts import key_of
from alignlab.refusal.intervention import Intervention
from alignlab.refusal.pipeline import RunState, _timed, save_direction
from alignlab.refusal.prompts import PromptSets
from alignlab.refusal.search_space import TrialScorer, decode
from alignlab.refusal.select import Candidate
from alignlab.refusal.weights import interpolate_direction


def choose_intervention(state: RunState, sets: PromptSets, r: torch.Tensor, selection: dict[str, Any]) -> Intervention:
    """RD's pick, or the search's, following ``--select``; says in one line which it used and why."""
    method = state.cfg.method
    rd = selection.get("chosen")
    if method == "cosmic":
        cand = Candidate(**rd)
        state.keys["intervention"] = key_of("cosmic", state.keys["select"])
        state.results["selection_method"] = "cosmic"
        scores = {"cosmic_comply": selection["cosmic"]["comply"], "cosmic_refuse": selection["cosmic"]["refuse"]}
        return Intervention("cosmic", r[cand.position, cand.layer], cand.layer, cand.position, None, scores,
                            layer_means=harmless_means(state)[cand.position],
                            affine=state.cfg.select.direction == "ace")
    if method == "rd" or (method == "auto" and rd is not None):
        if rd is None:
            raise AlignlabError(selection["error"])
        cand = Candidate(**rd)
        state.keys["intervention"] = key_of("rd", state.keys["select"])
        state.results["selection_method"] = "rd"
        if method == "auto":
            print(f"select auto: RD's pick passes the filters (layer {cand.layer}, position {cand.position}, "
                  f"KL {cand.kl:.3f}); no search needed", file=sys.stderr)
        return Intervention("rd", r[cand.position, cand.layer], cand.layer, cand.position, None,
                            {"bypass": cand.bypass, "induce": cand.induce, "kl": cand.kl},
                            layer_means=harmless_means(state)[cand.position],
                            affine=state.cfg.select.direction == "ace")
    if method == "auto":
        print(f"select auto: no RD candidate passes --kl-max {state.cfg.select.kl_max} and --induce-min "
              f"{state.cfg.select.induce_min}; searching the refusal/KL trade-off instead", file=sys.stderr)
    state.results["selection_method"] = "search"
    return stage_search(state, sets, r, search_seed(selection, state.cfg.select))


def search_seed(selection: dict[str, Any], cfg: Any) -> Candidate:
    """The (position, layer) the search starts from: RD's pick when there is one; otherwise the lowest-bypass
    candidate among those that still induce refusal and keep first-token KL within 10x the bound (a candidate
    that bypasses by wrecking the model, KL 12, is no place to start); otherwise the lowest-KL candidate that
    still induces refusal (the search fixes the position, and the run's ``added`` condition adds the chosen
    direction: on the shipped organism the position -5 directions have the lowest KL but induce 3/32 harmless
    refusals when added, the position -1 ones 32/32); only then the lowest KL."""
    if selection.get("chosen") is not None:
        return Candidate(**selection["chosen"])
    pool = [Candidate(**c) for c in selection.get("finalists", [])] or [Candidate(**selection["best_bypass"])]
    finite = [c for c in pool if all(math.isfinite(v) for v in (c.bypass, c.kl, c.induce))] or pool
    sane = [c for c in finite if c.kl <= 10 * cfg.kl_max and c.induce > cfg.induce_min]
    if sane:
        return min(sane, key=Candidate.key)
    inducing = [c for c in finite if c.induce > cfg.induce_min]
    return min(inducing or finite, key=lambda c: (c.kl, c.bypass, c.layer))


def stage_search(state: RunState, sets: PromptSets, r: torch.Tensor, best: Candidate) -> Intervention:
    from alignlab.refusal.search import (
        choose,
        confirm_points,
        pareto_front,
        run_trials,
        to_confirm,
        trial_record,
    )

    cfg = state.cfg.search
    n_layers = r.shape[1]
    max_layer = max(1, int(n_layers * (1 - state.cfg.select.prune_frac)))
    study_key = key_of(state.keys["extract"], {**asdict(cfg), "trials": None}, best.position, best.layer,
                       state.cfg.select.direction, state.results.get("massive_dims", []))
    key = key_of(study_key, cfg.trials)
    state.keys["search"] = key
    state.keys["intervention"] = key_of("search", key)

    def compute() -> dict[str, Any]:
        assert state.lm is not None and state.fmt is not None
        scorer = TrialScorer(state.lm.model, state.fmt, r, best.position, sets.texts("harmful", "val"),
                             sets.texts("harmless", "val"), cfg)
        trials = run_trials(scorer, cfg, state.run.file("search.journal"), study_key, n_layers, max_layer,
                            best.layer)
        front = pareto_front(trials)
        confirmed, base_degenerate = confirm_points(scorer, to_confirm(front, cfg, len(scorer.harmful)), cfg,
                                                    n_layers, best.layer)
        chosen, line = choose(confirmed, base_degenerate, cfg)
        print(line, file=sys.stderr)
        confirmed_at = {c.trial: c for c in confirmed}
        pareto = [{"trial": t.number, "refusal": t.values[0], "kl": t.values[1],
                   "confirmed": (asdict(confirmed_at[t.number]) if t.number in confirmed_at else None)}
                  for t in front]
        trial = next(t for t in trials if t.number == chosen.trial)
        return {"trials": [trial_record(t) for t in trials], "pareto": pareto, "chosen": asdict(chosen),
                "chosen_params": trial.params, "note": line, "base_degenerate": base_degenerate,
                "position": best.position, "rd_best": asdict(best), "n_prompts": len(scorer.harmful),
                "n_layers": n_layers}

    obj = _timed(state, "search", state.run.load_json("search.json", key), compute, ("search.json", key))
    point = decode(obj["chosen_params"], n_layers, best.layer)
    direction = interpolate_direction(r, best.position, point.direction_index)
    if state.run.load_tensors("direction.safetensors", key) is None:
        save_direction(state, key, direction, point.layer(), best.position,
                       {"method": "search", "direction_index": str(point.direction_index)})
    chosen = obj["chosen"]
    scores = {"refusal_val": chosen["refusal"], "kl": chosen["kl"], "direction_index": point.direction_index,
              "trial": chosen["trial"]}
    return Intervention("search", direction, point.layer(), best.position, point.weights, scores,
                        layer_means=harmless_means(state)[best.position], affine=state.cfg.select.direction == "ace")


def harmless_means(state: RunState) -> torch.Tensor:
    """Harmless means of resid_pre from the extract stage: [n_pos, n_layers, d]."""
    tensors = state.run.load_tensors("directions.safetensors", state.keys["extract"])
    if tensors is None:
        raise AlignlabError("directions.safetensors vanished during the run; run again to recompute it")
    return tensors["mean_harmless"]
