"""The export stage and the whole-pipeline driver (edit: edit_stage.py; evaluation: eval_stage.py)."""

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
from alignlab.refusal.edit_stage import apply_edit, measure_hooked
from alignlab.refusal.eval_stage import cached_evaluation, evaluate_edited, evaluate_hooked
from alignlab.refusal.intervention import Intervention
from alignlab.refusal.pipeline import (
    STAGES,
    RunConfig,
    RunState,
    candidates,
    load,
    stage_data,
    stage_extract,
    stage_select,
    stage_tokens,
)
from alignlab.refusal.prompts import PromptSets
from alignlab.refusal.search_stage import choose_intervention
from alignlab.refusal.subspace import stage_subspace

T = TypeVar("T")


def _export_key(state: RunState) -> str:
    return key_of(state.keys["edit"], state.cfg.export_gguf, *(["lora"] if state.cfg.export_lora else []))


def cached_export(state: RunState) -> dict | None:
    cached = state.run.load_json("export.json", _export_key(state))
    adapter_ok = not state.cfg.export_lora or (state.run.file("adapter") / "adapter_config.json").is_file()
    if cached is not None and (state.run.file("model") / "config.json").is_file() and adapter_ok:
        return cached
    return None


def _provenance(state: RunState, chosen: Intervention) -> dict[str, Any]:
    return {"source_model": state.cfg.model, "layer": chosen.layer, "position": chosen.position,
            "selection_method": chosen.method, "scores": chosen.scores or {},
            "weights": chosen.weights.to_json() if chosen.weights is not None else "full",
            "direction": chosen.direction.tolist(), "alignlab_version": __version__,
            "subspace": None if chosen.extra is None else chosen.extra.tolist(),
            "edit": state.results.get("edit", {})}


def _probe(state: RunState) -> Any:
    assert state.fmt is not None and state.lm is not None
    return state.fmt.encode(["Hello", "How do I bake bread?"], device=state.lm.device)


def prepare_export(state: RunState, chosen: Intervention) -> Any:
    """What the export needs from the base weights (before the in-place edit): the LoRA adapter, written and
    reloaded on the unedited model. None when nothing is needed."""
    if not state.cfg.export or not state.cfg.export_lora or cached_export(state) is not None:
        return None
    from alignlab.refusal.export_lora import prepare_run_adapter

    return prepare_run_adapter(state, chosen, _provenance(state, chosen), _probe(state))


def stage_export(state: RunState, edited: torch.nn.Module, chosen: Intervention, pending: Any = None) -> dict:
    from alignlab.refusal.export import export_model

    cached = cached_export(state)
    if cached is not None:
        state.timings["export"] = cached["seconds"]
        state.reused.add("export")
        return cached
    assert state.lm is not None and state.fmt is not None
    start = time.perf_counter()
    provenance = _provenance(state, chosen)
    diff = export_model(edited, state.lm.tokenizer, state.run.file("model"), provenance)
    obj = {"path": str(state.run.file("model")), "read_back_max_abs_weight_diff": diff}
    if state.cfg.export_gguf:
        from alignlab.refusal.gguf_export import export_gguf, read_back

        gguf_path = export_gguf(edited, state.lm.tokenizer, state.run.file("model.gguf"))
        obj.update(gguf=str(gguf_path), gguf_max_abs_diff=read_back(gguf_path, edited))
    if state.cfg.export_lora:
        from alignlab.refusal.export_lora import finish_run_adapter

        if pending is None:
            raise AlignlabError("the LoRA adapter is made from the unedited weights: rerun without --stop-after edit")
        obj.update(finish_run_adapter(pending, edited, provenance))
    obj["seconds"] = round(time.perf_counter() - start + (pending.seconds if pending is not None else 0.0), 3)
    state.run.save_json("export.json", _export_key(state), obj)
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
    """Run one stage; in a log (stderr not a terminal) a line at its start and end. Memory the stage freed
    goes back to the system before the next one starts."""
    from alignlab.models.memory import release_memory
    from alignlab.progress import stage

    with stage(name):
        out = fn(*args)
    release_memory()
    return out


def run_pipeline(cfg: RunConfig) -> dict[str, Any]:
    """Run (or resume) every stage; returns the report dict (also written as report.json/html/md)."""
    from alignlab.models.memory import release_memory
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
    r = candidates(state, r)
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
    chosen = _staged("subspace", stage_subspace, state, sets, r, ids, chosen)
    # No second copy of the model: everything that needs the base weights runs before the in-place edit.
    hooked = _staged("edit check", measure_hooked, state, sets, chosen)
    evaluation = cached_evaluation(state) if cfg.stop_after != "edit" else None
    hooked_eval = None
    if cfg.stop_after != "edit" and evaluation is None:
        hooked_eval = _staged("evaluate (base, ablated, added)", evaluate_hooked, state, sets, chosen)
    pending = prepare_export(state, chosen) if cfg.stop_after != "edit" else None
    edited = _staged("edit", apply_edit, state, chosen, hooked)
    hooked = None  # the check's hooked log-probs (its logits were spilled to disk) are no longer needed
    release_memory()
    if cfg.stop_after == "edit":
        return {}
    if evaluation is None:
        assert hooked_eval is not None
        exact = bool(state.results["edit"].get("exact_equivalence", False))
        evaluation = _staged("evaluate (edited)", evaluate_edited, state, sets, hooked_eval, exact)
    export = _staged("export", stage_export, state, edited, chosen, pending) if cfg.export else None
    start = time.perf_counter()
    report = _staged("report", write_report, state, chosen, evaluation, export)
    state.timings["report"] = round(time.perf_counter() - start, 3)
    return report


__all__ = ["STAGES", "RunConfig", "run_pipeline"]
