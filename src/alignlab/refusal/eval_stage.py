"""The evaluation stage in two halves around the in-place weight edit (issue 19 §1, §3).

``evaluate_hooked`` runs on the base weights: the ``base``, ``ablated`` (hooks) and ``added`` conditions,
and the base log-probs KL is measured against. ``evaluate_edited`` runs after the edit on the same, now
edited, model (the hooked half is saved as ``hooked.json``, so a rerun with other edit options skips it).
When the edit is exact (edited logits equal hooked logits up to rounding), the edited
model's greedy replies are the ablated model's: it generates a sample per split, and only if every sampled
reply is identical are the ablated replies reused for the rest (the check is in ``edited_generation``).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any

from alignlab.refusal.artifacts import key_of
from alignlab.refusal.evaluate import Generated, completion_ce, generate, summarise
from alignlab.refusal.intervene import add_direction
from alignlab.refusal.intervention import Intervention
from alignlab.refusal.judge import SubstringJudge
from alignlab.refusal.pipeline import RunState
from alignlab.refusal.prompts import PromptSets
from alignlab.refusal.score import first_token_kl
from alignlab.refusal.shared_prefix import SharedPrefix

SPLITS = ("harmful", "harmless")


@dataclass
class HookedEval:
    gens: list[Generated]
    """base, ablated and added replies, both test splits."""
    harmless: SharedPrefix
    """The harmless test prompts' last-position forward (template prefix once per pack), reused per condition; its
    ``baseline`` is the base model's first-token log-probs KL is measured against [n, vocab] (float64)."""
    kl: dict[str, float]
    ce: dict[str, float]
    seconds: float


def eval_key(state: RunState) -> str:
    key = key_of(state.keys["edit"], asdict(state.cfg.eval), state.keys["data"])
    state.keys["evaluate"] = key
    return key


def cached_evaluation(state: RunState) -> dict[str, Any] | None:
    cached = state.run.load_json("evaluation.json", eval_key(state))
    if cached is not None:
        state.timings["evaluate"] = cached["seconds"]
        state.reused.add("evaluate")
    return cached


def hooked_key(state: RunState) -> str:
    """The hooked conditions depend on the intervention, the evaluation settings and the prompts, not on the
    weight edit's options: a second run that only changes --postnorm or --norm-preserve reuses them."""
    return key_of(state.keys["intervention"], asdict(state.cfg.eval), state.keys["data"])


def evaluate_hooked(state: RunState, sets: PromptSets, chosen: Intervention) -> HookedEval:
    """The conditions that need the base weights (call before the edit); reused from ``hooked.json`` when a
    run with the same intervention and evaluation settings made them."""
    assert state.lm is not None and state.fmt is not None
    cached = _cached_hooked(state, sets)
    if cached is not None:
        return cached
    cfg, model, fmt = state.cfg.eval, state.lm.model, state.fmt
    start = time.perf_counter()
    d = chosen.direction.float()
    contexts = {"base": None, "ablated": lambda: chosen.ablate(model),
                "added": lambda: add_direction(model, d, chosen.layer, cfg.actadd_coeff)}
    gens = _base_gens(state, sets) + [g for condition, ctx in contexts.items() if condition != "base"
                                      for g in _generate_splits(state, sets, condition, ctx)]
    harmless = sets.texts("harmless", "test")
    shared = _harmless_forward(state, harmless)
    kl = {c: _kl(shared, ctx) for c, ctx in contexts.items() if c != "base"}
    ce = {}
    if cfg.ce:
        completions = _find(gens, "base", "harmless").responses
        ce = {c: completion_ce(model, fmt, harmless, completions, cfg.batch_size, ctx) for c, ctx in contexts.items()}
    out = HookedEval(gens, shared, kl, ce, time.perf_counter() - start)
    state.run.save_json("hooked.json", hooked_key(state),
                        {"gens": _gens_json(gens), "kl": kl, "ce": ce, "seconds": round(out.seconds, 3)})
    return out


def _base_gens(state: RunState, sets: PromptSets) -> list[Generated]:
    """The base model's replies: they depend on the model, the prompts and the evaluation settings only, so
    runs that try other interventions in a copy of the run directory share them (``base.json``)."""
    key = key_of(state.keys["tokens"], asdict(state.cfg.eval), state.keys["data"])
    saved = state.run.load_json("base.json", key)
    gens = _gens_from(saved["gens"], sets) if saved is not None else None
    if gens is None:
        gens = _generate_splits(state, sets, "base", None)
        state.run.save_json("base.json", key, {"gens": _gens_json(gens)})
    return gens


def _gens_json(gens: list[Generated]) -> list[dict[str, Any]]:
    return [{"condition": g.condition, "split": g.split, "prompts": [p.text for p in g.prompts],
             "responses": g.responses, "finished": g.finished, "refused": g.refused} for g in gens]


def _gens_from(saved: list[dict[str, Any]], sets: PromptSets) -> list[Generated] | None:
    """Saved generations back on the run's prompt objects; None if they were made from other prompts."""
    gens = []
    for g in saved:
        prompts = getattr(sets, g["split"])["test"]
        if [p.text for p in prompts] != g["prompts"]:
            return None
        gens.append(Generated(g["condition"], g["split"], prompts, g["responses"], g["finished"], g["refused"]))
    return gens


def _cached_hooked(state: RunState, sets: PromptSets) -> HookedEval | None:
    """The saved hooked conditions, with the base log-probs recomputed (one forward; 8 bytes x vocab per prompt
    are not worth storing); None when absent, stale, or made from other prompts."""
    assert state.lm is not None and state.fmt is not None
    saved = state.run.load_json("hooked.json", hooked_key(state))
    if saved is None:
        return None
    gens = _gens_from(saved["gens"], sets)
    if gens is None:
        return None
    shared = _harmless_forward(state, sets.texts("harmless", "test"))
    return HookedEval(gens, shared, saved["kl"], saved["ce"], saved["seconds"])


def _harmless_forward(state: RunState, harmless: list[str]) -> SharedPrefix:
    """The packed last-position forward of the harmless test prompts; its ``baseline`` is the base model's
    log-probs (construct it before any hook and before the edit)."""
    assert state.lm is not None and state.fmt is not None
    return SharedPrefix(state.lm.model, state.fmt.encode(harmless, device=state.lm.device, strict=False),
                        batch_size=state.cfg.eval.batch_size)


def _kl(shared: SharedPrefix, ctx: Any) -> float:
    """Mean first-token KL(base || the model under ``ctx``) on the harmless test prompts."""
    with (ctx or nullcontext)():
        lp = shared.last_logprobs()
    return float(first_token_kl(shared.baseline, lp).mean())


def evaluate_edited(state: RunState, sets: PromptSets, hooked: HookedEval, exact: bool) -> dict[str, Any]:
    """The ``edited`` condition on the (now edited) model, then the whole evaluation artifact."""
    assert state.lm is not None and state.fmt is not None
    cfg, model, fmt = state.cfg.eval, state.lm.model, state.fmt
    start = time.perf_counter()
    shared = _share_check(state, sets, hooked.gens) if exact and cfg.share_exact else None
    if shared is not None and shared["identical"] == shared["checked"]:
        edited = [replace(g, condition="edited") for g in hooked.gens if g.condition == "ablated"]
    else:
        edited = _generate_splits(state, sets, "edited", None)
    harmless = sets.texts("harmless", "test")
    kl = {**hooked.kl, "edited": _kl(hooked.harmless, None)}
    ce = dict(hooked.ce)
    if cfg.ce:
        completions = _find(hooked.gens, "base", "harmless").responses
        ce["edited"] = completion_ce(model, fmt, harmless, completions, cfg.batch_size)
    order = ("base", "ablated", "edited", "added")
    kl, ce = ({c: x[c] for c in order if c in x} for x in (kl, ce))
    gens = sorted(hooked.gens + edited, key=lambda g: (order.index(g.condition), SPLITS.index(g.split)))
    obj = _artifact(gens, kl, ce, state)
    obj["edited_generation"] = {"shared_with_ablated": shared is not None and shared["identical"] == shared["checked"],
                                **(shared or {"checked": 0, "identical": 0,
                                              "reason": "edit not exact" if not exact else "sharing turned off"})}
    obj["seconds"] = round(hooked.seconds + time.perf_counter() - start, 3)
    state.run.save_json("evaluation.json", eval_key(state), obj)
    state.timings["evaluate"] = obj["seconds"]
    return obj


def _share_check(state: RunState, sets: PromptSets, gens: list[Generated]) -> dict[str, Any]:
    """Generate the first ``share_check`` prompts of each split with the edited model (one call); count replies
    equal to the ablated (hooked) model's replies."""
    n = state.cfg.eval.share_check
    ablated = [_find(gens, "ablated", split) for split in SPLITS]
    sample = _generate(state, sets, "edited", "+".join(SPLITS), None, [p for a in ablated for p in a.prompts[:n]])
    reference = [r for a in ablated for r in a.responses[:n]]
    return {"checked": len(sample.responses), "identical": sum(a == b for a, b in zip(sample.responses, reference))}


def _generate_splits(state: RunState, sets: PromptSets, condition: str, ctx: Any) -> list[Generated]:
    """One condition's replies on both test splits, from one call: with continuous batching the rows of short
    replies (refusals end in ~13 tokens) go to waiting prompts of either split."""
    prompts = [p for split in SPLITS for p in getattr(sets, split)["test"]]
    both = _generate(state, sets, condition, "+".join(SPLITS), ctx, prompts)
    out, start = [], 0
    for split in SPLITS:
        n = len(getattr(sets, split)["test"])
        part = slice(start, start + n)
        out.append(Generated(condition, split, both.prompts[part], both.responses[part], both.finished[part],
                             both.refused[part]))
        start += n
    return out


def _generate(state: RunState, sets: PromptSets, condition: str, split: str, ctx: Any,
              prompts: list[Any] | None = None) -> Generated:
    assert state.lm is not None and state.fmt is not None
    cfg = state.cfg.eval
    return generate(state.lm.model, state.fmt, prompts if prompts is not None else getattr(sets, split)["test"],
                    condition=condition, split=split, judge=SubstringJudge(cfg.judge),
                    max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, context=ctx)


def _find(gens: list[Generated], condition: str, split: str) -> Generated:
    return next(g for g in gens if g.condition == condition and g.split == split)


def _artifact(gens: list[Generated], kl: dict[str, float], ce: dict[str, float], state: RunState) -> dict[str, Any]:
    cfg = state.cfg.eval
    base = {g.split: g for g in gens if g.condition == "base"}
    samples = {g.condition + "/" + g.split: [{"prompt": p.text, "category": p.category, "response": r,
                                              "refusal": f} for p, r, f in zip(g.prompts, g.responses, g.refused)]
               for g in gens}
    obj: dict[str, Any] = {"summary": summarise(gens, base), "kl_harmless": kl, "ce_harmless": ce, "samples": samples,
                           "judge": SubstringJudge(cfg.judge).name, "max_new_tokens": cfg.max_new_tokens,
                           "refusal_rate": {g.condition: {} for g in gens}}
    for g in gens:
        obj["refusal_rate"][g.condition][g.split] = g.rate.rate
    obj["opening_judge"] = opening_rates(gens)
    return obj


def opening_rates(gens: list[Generated]) -> dict[str, dict[str, dict[str, Any]]]:
    """The second judge (reads the reply's opening; late refusals after an acceptance counted apart)."""
    from alignlab.refusal.judge import OpeningJudge
    from alignlab.refusal.stats import wilson

    judge, out = OpeningJudge(), {}
    for g in gens:
        labels = [v.label for v in judge.judge([p.text for p in g.prompts], g.responses)]
        k, late, n = labels.count("refusal"), labels.count("late_refusal"), len(labels)
        out.setdefault(g.condition, {})[g.split] = {"rate": k / n if n else float("nan"), "k": k, "n": n,
                                                    "wilson95": wilson(k, n), "late_refusals": late}
    return out


__all__ = ["HookedEval", "cached_evaluation", "evaluate_edited", "evaluate_hooked"]
