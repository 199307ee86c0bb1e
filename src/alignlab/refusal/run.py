"""Evaluate, export and report stages, and the whole-pipeline driver."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

import torch

from alignlab import __version__
from alignlab.errors import AlignlabError
from alignlab.refusal.artifacts import RunDir, key_of
from alignlab.refusal.evaluate import Generated, completion_ce, generate, harmless_kl, summarise
from alignlab.refusal.forward import logprobs_for
from alignlab.refusal.intervene import add_direction
from alignlab.refusal.intervention import Intervention
from alignlab.refusal.judge import SubstringJudge
from alignlab.refusal.pipeline import (
    STAGES,
    RunConfig,
    RunState,
    load,
    stage_data,
    stage_edit,
    stage_extract,
    stage_select,
    stage_tokens,
)
from alignlab.refusal.prompts import PromptSets
from alignlab.refusal.search_stage import choose_intervention

T = TypeVar("T")


def stage_evaluate(state: RunState, sets: PromptSets, chosen: Intervention, edited: torch.nn.Module) -> dict[str, Any]:
    cfg = state.cfg.eval
    key = key_of(state.keys["edit"], asdict(cfg), state.keys["data"])
    state.keys["evaluate"] = key
    cached = state.run.load_json("evaluation.json", key)
    if cached is not None:
        state.timings["evaluate"] = cached["seconds"]
        state.reused.add("evaluate")
        return cached
    assert state.lm is not None and state.fmt is not None
    start = time.perf_counter()
    model, fmt, judge = state.lm.model, state.fmt, SubstringJudge(cfg.judge)
    d = chosen.direction.float()
    contexts = {
        "base": (model, None),
        "ablated": (model, lambda: chosen.ablate(model)),
        "edited": (edited, None),
        "added": (model, lambda: add_direction(model, d, chosen.layer, cfg.actadd_coeff)),
    }
    gens: list[Generated] = []
    for condition, (m, ctx) in contexts.items():
        for split in ("harmful", "harmless"):
            prompts = getattr(sets, split)["test"]
            gens.append(generate(m, fmt, prompts, condition=condition, split=split, judge=judge,
                                 max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, context=ctx))
    base = {g.split: g for g in gens if g.condition == "base"}
    harmless_texts = sets.texts("harmless", "test")
    base_lp = logprobs_for(model, fmt, harmless_texts, cfg.batch_size)
    kl = {c: harmless_kl(m, fmt, harmless_texts, cfg.batch_size, base_lp, ctx)
          for c, (m, ctx) in contexts.items() if c != "base"}
    ce = {}
    if cfg.ce:
        completions = base["harmless"].responses
        ce = {c: completion_ce(m, fmt, harmless_texts, completions, cfg.batch_size, ctx)
              for c, (m, ctx) in contexts.items()}
    samples = {g.condition + "/" + g.split: [{"prompt": p.text, "category": p.category, "response": r,
                                              "refusal": f} for p, r, f in zip(g.prompts, g.responses, g.refused)]
               for g in gens}
    obj = {"summary": summarise(gens, base), "kl_harmless": kl, "ce_harmless": ce, "samples": samples,
           "judge": judge.name, "max_new_tokens": cfg.max_new_tokens,
           "refusal_rate": {g.condition: {} for g in gens}, "seconds": round(time.perf_counter() - start, 3)}
    for g in gens:
        obj["refusal_rate"][g.condition][g.split] = g.rate.rate
    obj["opening_judge"] = _opening_rates(gens)
    state.run.save_json("evaluation.json", key, obj)
    state.timings["evaluate"] = obj["seconds"]
    return obj


def _opening_rates(gens: list[Generated]) -> dict[str, dict[str, dict[str, Any]]]:
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


def stage_export(state: RunState, edited: torch.nn.Module, chosen: Intervention) -> dict:
    from alignlab.refusal.export import export_model

    key = key_of(state.keys["edit"], state.cfg.export_gguf, *(["lora"] if state.cfg.export_lora else []))
    cached = state.run.load_json("export.json", key)
    adapter_ok = not state.cfg.export_lora or (state.run.file("adapter") / "adapter_config.json").is_file()
    if cached is not None and (state.run.file("model") / "config.json").is_file() and adapter_ok:
        state.timings["export"] = cached["seconds"]
        state.reused.add("export")
        return cached
    assert state.lm is not None and state.fmt is not None
    start = time.perf_counter()
    provenance = {"source_model": state.cfg.model, "layer": chosen.layer, "position": chosen.position,
                  "selection_method": chosen.method, "scores": chosen.scores or {},
                  "weights": chosen.weights.to_json() if chosen.weights is not None else "full",
                  "direction": chosen.direction.tolist(), "alignlab_version": __version__,
                  "edit": state.results.get("edit", {})}
    probe = state.fmt.encode(["Hello", "How do I bake bread?"], device=state.lm.device)
    diff = export_model(edited, state.lm.tokenizer, state.run.file("model"), provenance, probe)
    obj = {"path": str(state.run.file("model")), "reload_max_abs_logit_diff": diff}
    if state.cfg.export_gguf:
        from alignlab.refusal.gguf_export import export_gguf, read_back

        gguf_path = export_gguf(edited, state.lm.tokenizer, state.run.file("model.gguf"))
        obj.update(gguf=str(gguf_path), gguf_max_abs_diff=read_back(gguf_path, edited))
    if state.cfg.export_lora:
        from alignlab.refusal.export_lora import export_run_adapter

        obj.update(export_run_adapter(state, edited, chosen, provenance, probe))
    obj["seconds"] = round(time.perf_counter() - start, 3)
    state.run.save_json("export.json", key, obj)
    state.timings["export"] = obj["seconds"]
    return obj


def _check_lengths(state: RunState, sets: PromptSets) -> None:
    from alignlab.models.chat import check_context

    assert state.lm is not None and state.fmt is not None
    cfg = state.cfg
    # new tokens each split is generated with: train is only read; val harmful is confirmed by generation
    reserve = {"train": 0, "val": cfg.select.confirm_tokens if cfg.select.confirm_k else 1,
               "test": cfg.eval.max_new_tokens}
    for side in ("harmful", "harmless"):
        for split, n_new in reserve.items():
            check_context(state.fmt, state.lm.model, {f"{side} {split}": sets.texts(side, split)}, n_new)


def _staged(name: str, fn: Callable[..., T], *args: Any) -> T:
    """Run one stage; in a log (stderr not a terminal) a line at its start and end."""
    from alignlab.progress import stage

    with stage(name):
        return fn(*args)


def run_pipeline(cfg: RunConfig) -> dict[str, Any]:
    """Run (or resume) every stage; returns the report dict (also written as report.json/html/md)."""
    from alignlab.refusal.report import write_report

    state = RunState(cfg, RunDir(cfg.out))
    state.run.save_json("run.json", "config", {"config": json.loads(json.dumps(asdict(cfg), default=str)),
                                               "alignlab_version": __version__})
    sets = _staged("data", stage_data, state)
    if cfg.stop_after == "data":
        return {}
    start = time.perf_counter()
    _staged("load", load, state)
    state.timings["load"] = round(time.perf_counter() - start, 3)
    _check_lengths(state, sets)
    if cfg.export and cfg.export_lora:  # fail now, not after the long stages
        from alignlab.refusal.export_lora import check_run

        check_run(state.lm.model, cfg.edit)
    ids = _staged("tokens", stage_tokens, state, sets)
    r = _staged("extract", stage_extract, state, sets, ids)
    if cfg.select.direction == "projected":
        from alignlab.refusal.search_stage import harmless_means
        from alignlab.refusal.variants import project_out_mean

        r = project_out_mean(r, harmless_means(state))
    if cfg.stop_after == "extract":
        return {}
    selection = _staged("select", stage_select, state, sets, ids, r)
    if cfg.stop_after == "select" and cfg.method != "search":
        if selection["chosen"] is None and cfg.method == "rd":
            raise AlignlabError(selection["error"])
        return {}
    chosen = _staged("choose", choose_intervention, state, sets, r, selection)
    if cfg.stop_after in ("select", "search"):
        return {}
    edited = _staged("edit", stage_edit, state, sets, chosen)
    if cfg.stop_after == "edit":
        return {}
    evaluation = _staged("evaluate", stage_evaluate, state, sets, chosen, edited)
    export = _staged("export", stage_export, state, edited, chosen) if cfg.export else None
    start = time.perf_counter()
    report = _staged("report", write_report, state, chosen, evaluation, export)
    state.timings["report"] = round(time.perf_counter() - start, 3)
    return report


__all__ = ["STAGES", "RunConfig", "run_pipeline"]
