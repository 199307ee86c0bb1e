"""`alignlab refusal study MODEL... --out DIR`: the source thread's claims about the refusal direction, measured
side by side on the same held-out prompts (issue 16).

Per model, ``DIR/<model>/`` is an ordinary `refusal run` directory: the study runs the run's own data, tokens,
extract and select stages there (reusing whatever artifacts exist with the same inputs), then writes its own
keyed artifacts under ``DIR/<model>/study/`` (so a killed study resumes condition by condition). The results
go to ``DIR/study.json`` and a self-contained ``DIR/study.html``; every verdict comes from
``study_verdict``.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from alignlab import __version__
from alignlab.errors import AlignlabError
from alignlab.refusal.artifacts import RunDir, key_of
from alignlab.refusal.config import EvalConfig, PromptConfig, SelectConfig
from alignlab.refusal.pipeline import (
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
from alignlab.refusal.select import Candidate
from alignlab.refusal.study_conditions import Condition, Direction, build_conditions, context_for
from alignlab.refusal.study_config import StudyConfig
from alignlab.refusal.study_reuse import DEFAULT_REUSE, adopt, source_for


@dataclass(frozen=True)
class StudyRun:
    models: tuple[str, ...]
    out: Path
    study: StudyConfig = StudyConfig()
    prompts: PromptConfig = PromptConfig()
    select: SelectConfig = SelectConfig()
    quick: bool = False
    device: str | None = None
    dtype: str | None = None
    chat_template: str | None = None
    fallback_template: bool = False
    allow_pickle: bool = False
    trust_remote_code: bool = False
    reuse: tuple[Path, ...] | None = None
    """`refusal run` directories whose stage artifacts are adopted (None: ``study_reuse.DEFAULT_REUSE``)."""

    def __post_init__(self) -> None:
        if not self.models:
            raise AlignlabError("name at least one model to study")
        if self.select.direction != "mean-diff":
            raise AlignlabError("the study compares RD's difference-of-means direction: drop --direction")
        slugs = [model_slug(m) for m in self.models]
        if len(set(slugs)) != len(slugs):
            raise AlignlabError(f"two models share a run directory name ({', '.join(slugs)}): name each once")


def model_slug(spec: str) -> str:
    """The model's run-directory name under --out: an embedded name or HF id (``/`` -> ``--``), or a path's name."""
    path = Path(spec)
    name = path.name if path.exists() else spec.replace("/", "--")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


def _run_state(spec: str, cfg: StudyRun) -> tuple[RunState, dict[str, Any]]:
    """The model's run state in ``OUT/<model>``, after adopting a matching `refusal run` directory's artifacts
    (what was adopted, from where)."""
    run_cfg = RunConfig(
        model=spec,
        out=cfg.out / model_slug(spec),
        prompts=cfg.prompts,
        select=cfg.select,
        eval=EvalConfig(
            max_new_tokens=cfg.study.max_new_tokens,
            allow_short=True,
            judge=cfg.study.judge,
            batch_size=cfg.study.gen_batch_size,
        ),
        method="rd",
        device=cfg.device,
        dtype=cfg.dtype,
        chat_template=cfg.chat_template,
        fallback_template=cfg.fallback_template,
        export=False,
        allow_pickle=cfg.allow_pickle,
        trust_remote_code=cfg.trust_remote_code,
    )
    candidates = cfg.reuse if cfg.reuse is not None else tuple(Path(p) for p in DEFAULT_REUSE)
    source = source_for(spec, candidates)
    adopted = adopt(run_cfg.out, source) if source is not None else []
    if adopted:
        print(f"study {spec}: adopted {', '.join(adopted)} from {source}", file=sys.stderr)
    run = RunDir(run_cfg.out)
    for tmp in run.file("study").glob(
        ".*.tmp"
    ):  # half-written by a killed study (RunDir cleans the top level)
        tmp.unlink(missing_ok=True)
    return RunState(run_cfg, run), {"from": None if source is None else str(source), "files": adopted}


def _check_lengths(state: RunState, sets: PromptSets, cfg: StudyConfig) -> None:
    from alignlab.models.chat import check_context

    assert state.lm is not None and state.fmt is not None
    for side in ("harmful", "harmless"):
        check_context(
            state.fmt, state.lm.model, {f"{side} test": sets.texts(side, "test")}, cfg.max_new_tokens
        )
        check_context(
            state.fmt,
            state.lm.model,
            {f"{side} train": sets.texts(side, "train")[: cfg.n_response]},
            cfg.aux_tokens,
        )


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def _directions(
    state: RunState,
    sets: PromptSets,
    ids: list[int],
    r: torch.Tensor,
    cand: Candidate,
    cfg: StudyConfig,
    judge: Any,
) -> tuple[dict[str, Direction], dict[str, Any]]:
    """Every direction the conditions use, and what the study records about them (cosines, counts, layers)."""
    from alignlab.refusal import study_stages as st

    layer, n_pos = cand.layer, r.shape[0]
    table = {"instructions": Direction(r[cand.position, layer], layer, cand.position, "instructions")}
    for p in range(-n_pos, 0):
        if p != cand.position:
            table[f"pos{p}"] = Direction(r[p, layer], layer, p, "instructions")
    table["position_mean"] = Direction(r[:, layer].mean(0), layer, None, "instructions, mean over positions")
    rs, rkey = st.responses(state, sets, cfg, table["instructions"], judge)
    cd, dkey = st.contrasts(state, sets, rs, rkey, cfg)
    table["last_instruction"] = Direction(
        cd.last_instruction[layer], layer, -n_pos - 1, "last instruction token"
    )
    picked = st.contrast_layers(state, sets, ids, cd, dkey)
    for name, per_layer in (("responses", cd.refusal_vs_compliance), ("base_responses", cd.base_responses)):
        table[name] = Direction(per_layer[picked[name]["layer"]], picked[name]["layer"], None, name)
    instr = table["instructions"].vector
    cosines = {
        "selected": {
            "instructions~responses": _cos(instr, table["responses"].vector),
            "instructions~base_responses": _cos(instr, table["base_responses"].vector),
            "responses~base_responses": _cos(table["responses"].vector, table["base_responses"].vector),
        },
        f"at_layer_{layer}": {
            "instructions~responses": _cos(instr, cd.refusal_vs_compliance[layer]),
            "instructions~base_responses": _cos(instr, cd.base_responses[layer]),
            "responses~base_responses": _cos(cd.refusal_vs_compliance[layer], cd.base_responses[layer]),
            "instructions~last_instruction": _cos(instr, cd.last_instruction[layer]),
        },
    }
    info = {
        "cosines": cosines,
        "counts": cd.counts,
        "notes": cd.notes,
        "contrast_selection": picked,
        "table": {
            k: {"layer": d.layer, "position": d.position, "source": d.source, "norm": float(d.vector.norm())}
            for k, d in table.items()
        },
    }
    return table, info


def _measure_all(
    state: RunState,
    sets: PromptSets,
    table: dict[str, Direction],
    conditions: list[Condition],
    cfg: StudyConfig,
    judge: Any,
    edit: Any,
) -> tuple[dict[str, Any], list[str]]:
    """Measure every condition, reusing each one's artifact when its key matches."""
    from alignlab.progress import stage
    from alignlab.refusal.forward import logprobs_for
    from alignlab.refusal.study_measure import Reference, measure
    from alignlab.refusal.study_stages import load_artifact, reference_completions, vector_hash

    assert state.lm is not None and state.fmt is not None
    completions, ref_key = reference_completions(state, sets, cfg)
    harmless = sets.texts("harmless", "test")
    reference = functools.cache(
        lambda: Reference(
            harmless, logprobs_for(state.lm.model, state.fmt, harmless, cfg.gen_batch_size), completions
        )
    )
    study_key = key_of(
        state.model_id(), sets.texts("harmful", "test"), cfg.max_new_tokens, cfg.judge, ref_key
    )
    results, reused = {}, []
    for cond in conditions:
        d = table.get(cond.direction) if cond.direction else None
        key = key_of(study_key, cond.spec(), None if d is None else [vector_hash(d.vector), d.layer])
        name = "study/cond-" + re.sub(r"[^A-Za-z0-9_.-]", "_", cond.name) + ".json"
        obj = load_artifact(state, name, key)
        if obj is None:
            model = edit()[0] if cond.kind == "edited" else state.lm.model
            with stage(f"study {cond.name}"):
                obj = measure(
                    cond,
                    model,
                    context_for(cond, model, table),
                    state.fmt,
                    sets.harmful["test"],
                    reference(),
                    judge,
                    cfg,
                )
            state.run.save_json(name, key, obj)
        else:
            reused.append(cond.name)
        results[cond.name] = obj
    return results, reused


def study_model(spec: str, cfg: StudyRun) -> dict[str, Any]:
    """Every condition and claim for one model (its run directory is reused and extended)."""
    from alignlab.refusal import study_stages as st
    from alignlab.refusal.judge import SubstringJudge
    from alignlab.refusal.study_claims import claim_entries, sweep_points

    start = time.perf_counter()
    state, adopted = _run_state(spec, cfg)
    sets = stage_data(state)
    load(state)
    assert state.lm is not None and state.fmt is not None
    _check_lengths(state, sets, cfg.study)
    ids = stage_tokens(state, sets)
    r = candidates(state, stage_extract(state, sets, ids))
    selection = stage_select(state, sets, ids, r)
    cand, rule = st.chosen_candidate(selection, cfg.select)
    print(
        f"study {spec}: direction at layer {cand.layer}, position {cand.position} ({rule})", file=sys.stderr
    )
    judge = SubstringJudge(cfg.study.judge)
    table, info = _directions(state, sets, ids, r, cand, cfg.study, judge)
    edit = functools.cache(lambda: st.edited_model(state, table["instructions"]))
    gap, _ = st.edit_gap(state, sets, table["instructions"], state.keys["select"], edit)
    conditions = build_conditions(list(range(-r.shape[0], 0)), cand.position, cfg.study.coefficients)
    results, reused = _measure_all(state, sets, table, conditions, cfg.study, judge, edit)
    claims = claim_entries(
        results,
        cfg.study.coefficients,
        cfg.study.alpha,
        cfg.study.equivalence_margin,
        gap,
        info.pop("cosines"),
    )
    return {
        "model": spec,
        "run_dir": str(state.run.path),
        "n_layers": int(r.shape[1]),
        "n_eoi": state.fmt.n_eoi,
        "eoi": state.fmt.eoi_text,
        "selected": {**asdict(cand), "rule": rule},
        "directions": info,
        "claims": claims,
        "sweep": sweep_points(results, cfg.study.coefficients),
        "conditions": {
            n: {k: v for k, v in res.items() if k not in ("per_prompt", "responses")}
            for n, res in results.items()
        },
        "samples": {
            n: [
                {"prompt": p.text, "response": res["responses"][i]}
                for i, p in enumerate(sets.harmful["test"][:3])
            ]
            for n, res in results.items()
        },
        "n_harmful_test": len(sets.harmful["test"]),
        "n_harmless_test": len(sets.harmless["test"]),
        "reused_conditions": reused,
        "reused_stages": sorted(state.reused),
        "adopted": adopted,
        "wall_s": round(time.perf_counter() - start, 1),
    }


def run_study(cfg: StudyRun) -> dict[str, Any]:
    """Study every model, then write study.json, study.md and study.html into ``cfg.out``."""
    from alignlab.refusal.study_report import write_study
    from alignlab.refusal.study_verdict import many_models_verdict

    start = time.perf_counter()
    models = {}
    for spec in cfg.models:
        models[model_slug(spec)] = study_model(spec, cfg)
    verdicts = {slug: {k: c["verdict"] for k, c in m["claims"].items()} for slug, m in models.items()}
    study = {
        "schema": 1,
        "alignlab_version": __version__,
        "quick": cfg.quick,
        "config": {
            "study": asdict(cfg.study),
            "prompts": asdict(cfg.prompts),
            "select": asdict(cfg.select),
            "device": cfg.device,
            "dtype": cfg.dtype,
        },
        "models": models,
        "many_models": {
            "title": "6. Many models",
            "claim": "Every finding above holds on every studied model.",
            **many_models_verdict(verdicts),
        },
        "wall_s": round(time.perf_counter() - start, 1),
    }
    write_study(cfg.out, study)
    return study


__all__ = ["StudyRun", "model_slug", "run_study", "study_model"]
