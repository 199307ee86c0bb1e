"""The study's own cached steps, written into the model's `refusal run` directory under ``study/``.

Each artifact is keyed by its inputs (``artifacts.key_of``) like the run's stages, so a rerun reuses what
exists and recomputes only what changed: the train-prompt responses behind the response contrasts, the
contrast directions and their selection, the weight-edit gap, the base model's harmless completions and one
file per condition.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import asdict
from typing import Any

import torch

from alignlab.refusal.artifacts import key_of
from alignlab.refusal.config import SelectConfig
from alignlab.refusal.pipeline import RunState
from alignlab.refusal.prompts import PromptSets
from alignlab.refusal.select import Candidate
from alignlab.refusal.study_conditions import Direction
from alignlab.refusal.study_config import StudyConfig
from alignlab.refusal.study_directions import ContrastDirections, ResponseSets, contrast_directions, masked


def load_artifact(state: RunState, name: str, key: str) -> dict[str, Any] | None:
    """The artifact made from the same inputs, without its ``key`` (so a reused artifact reads exactly as a
    freshly computed one), or None."""
    obj = state.run.load_json(name, key)
    return None if obj is None else {k: v for k, v in obj.items() if k != "key"}


def vector_hash(v: torch.Tensor) -> str:
    return hashlib.sha256(v.detach().double().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def chosen_candidate(selection: dict[str, Any], cfg: SelectConfig) -> tuple[Candidate, str]:
    """RD's pick; when no candidate passes its filters, the search's starting rule (lowest bypass among those
    that still induce refusal with KL <= 10x the bound). The rule used is returned with it."""
    from alignlab.refusal.search_stage import search_seed

    if selection.get("chosen") is not None:
        return Candidate(**selection["chosen"]), "rd"
    cand = search_seed(selection, cfg)
    bound, induce = 10 * cfg.kl_max, cfg.induce_min
    if cand.kl <= bound and cand.induce > induce:
        why = f"lowest bypass with kl <= {bound:g} and induce > {induce:g}"
    elif cand.induce > induce:
        why = f"none has kl <= {bound:g} and induce > {induce:g}: lowest kl with induce > {induce:g}"
    else:
        why = f"none induces refusal (induce > {induce:g}): lowest kl"
    return cand, f"rd-fallback: no candidate passed kl <= {cfg.kl_max:g}; {why}"


def select_layer(state: RunState, sets: PromptSets, ids: list[int], r: torch.Tensor) -> tuple[Candidate, str]:
    """RD's selection over the layers of a per-layer direction r [n_layers, d], same filters and fallback."""
    from alignlab.refusal.select import NoSurvivorError, select_direction

    assert state.lm is not None and state.fmt is not None
    cfg = state.cfg.select
    try:
        sel = select_direction(
            state.lm.model,
            state.fmt,
            r[None],
            sets.texts("harmful", "val"),
            sets.texts("harmless", "val"),
            ids,
            cfg,
        )
        return sel.chosen, "rd"
    except NoSurvivorError as exc:
        return chosen_candidate({"chosen": None, "finalists": [asdict(c) for c in exc.finalists]}, cfg)


def responses(
    state: RunState, sets: PromptSets, cfg: StudyConfig, instructions: Direction, judge: Any
) -> tuple[ResponseSets, str]:
    """Base and ablated responses on harmful TRAIN prompts, base responses on harmless TRAIN (cached)."""
    from alignlab.models.generate import generate_greedy
    from alignlab.refusal.intervene import ablate

    harmful = sets.texts("harmful", "train")[: cfg.n_response]
    harmless = sets.texts("harmless", "train")[: cfg.n_response]
    key = key_of(
        state.model_id(), vector_hash(instructions.vector), harmful, harmless, cfg.aux_tokens, cfg.judge
    )
    cached = load_artifact(state, "study/responses.json", key)
    if cached is None:
        assert state.lm is not None and state.fmt is not None
        model, fmt, n, bs = state.lm.model, state.fmt, cfg.aux_tokens, cfg.gen_batch_size
        base_h = [x.text for x in generate_greedy(model, fmt, harmful, n, bs)]
        base_b = [x.text for x in generate_greedy(model, fmt, harmless, n, bs)]
        with ablate(model, instructions.vector.float()):
            abl_h = [x.text for x in generate_greedy(model, fmt, harmful, n, bs)]
        cached = {
            "harmful_prompts": harmful,
            "harmless_prompts": harmless,
            "base_harmful": base_h,
            "base_harmless": base_b,
            "ablated_harmful": abl_h,
            "base_harmful_refused": [v.label == "refusal" for v in judge.judge(harmful, base_h)],
            "ablated_harmful_refused": [v.label == "refusal" for v in judge.judge(harmful, abl_h)],
        }
        state.run.save_json("study/responses.json", key, cached)
    return ResponseSets(**cached), key


def contrasts(
    state: RunState, sets: PromptSets, rs: ResponseSets, responses_key: str, cfg: StudyConfig
) -> tuple[ContrastDirections, str]:
    """The response-contrast and last-instruction-token directions (cached safetensors + JSON, unmasked), with
    the run's massive-activation dims zeroed as in the instruction candidates; the returned key names the mask
    so that later stages keyed on it recompute when the mask changes."""
    key = key_of(responses_key, state.keys["fit"])
    dims = state.results.get("massive_dims", [])
    out_key = key_of(key, "massive", dims) if dims else key
    tensors = state.run.load_tensors("study/directions.safetensors", key)
    meta = load_artifact(state, "study/directions.json", key)
    if tensors is not None and meta is not None:
        cached = ContrastDirections(
            tensors["refusal_vs_compliance"],
            tensors["base_responses"],
            tensors["last_instruction"],
            meta["counts"],
            meta["notes"],
        )
        return masked(cached, dims), out_key
    assert state.lm is not None and state.fmt is not None
    cd = contrast_directions(
        state.lm.model,
        state.fmt,
        rs,
        sets.texts("harmful", "train"),
        sets.texts("harmless", "train"),
        cfg.gen_batch_size,
    )
    state.run.save_tensors(
        "study/directions.safetensors",
        key,
        {
            "refusal_vs_compliance": cd.refusal_vs_compliance,
            "base_responses": cd.base_responses,
            "last_instruction": cd.last_instruction,
        },
        {"model": state.cfg.model},
    )
    state.run.save_json("study/directions.json", key, {"counts": cd.counts, "notes": cd.notes})
    return masked(cd, dims), out_key


def contrast_layers(
    state: RunState, sets: PromptSets, ids: list[int], cd: ContrastDirections, directions_key: str
) -> dict[str, Any]:
    """Each response-contrast direction's layer, selected exactly as the instruction direction was (cached)."""
    key = key_of(directions_key, asdict(state.cfg.select), ids)
    cached = load_artifact(state, "study/selections.json", key)
    if cached is None:
        cached = {}
        for name, r in (("responses", cd.refusal_vs_compliance), ("base_responses", cd.base_responses)):
            cand, rule = select_layer(state, sets, ids, r)
            cached[name] = {**asdict(cand), "rule": rule}
        state.run.save_json("study/selections.json", key, cached)
    return cached


def edit_gap(
    state: RunState, sets: PromptSets, instructions: Direction, base_key: str, edit: Any
) -> tuple[dict[str, Any], str]:
    """The measured gap between the orthogonalised weights and the hooks: max |Δlogit| over every position of
    8 val prompts and max |Δp| of the first-token distribution on val (cached)."""
    from alignlab.refusal.config import EditConfig
    from alignlab.refusal.forward import logprobs_for, position_ids
    from alignlab.refusal.intervene import ablate

    key = key_of(base_key, vector_hash(instructions.vector), asdict(EditConfig()))
    cached = load_artifact(state, "study/edit.json", key)
    if cached is not None:
        return cached, key
    assert state.lm is not None and state.fmt is not None
    edited, report = edit()
    model, fmt, vec = state.lm.model, state.fmt, instructions.vector.float()
    prompts = sets.texts("harmless", "val") + sets.texts("harmful", "val")
    with ablate(model, vec):
        hooked = logprobs_for(model, fmt, prompts, state.cfg.select.batch_size)
    baked = logprobs_for(edited, fmt, prompts, state.cfg.select.batch_size)
    enc = fmt.encode(prompts[:8], device=state.lm.device, strict=False)
    kw = {
        "input_ids": enc.input_ids,
        "attention_mask": enc.attention_mask,
        "position_ids": position_ids(enc.attention_mask),
    }
    with torch.no_grad():
        with ablate(model, vec):
            hook_logits = model(**kw).logits.float()
        edit_logits = edited(**kw).logits.float()
    mask = enc.attention_mask.bool()
    cached = {
        "max_abs_logit_diff": float((hook_logits - edit_logits)[mask].abs().max()),
        "max_abs_prob_diff": float((hooked.exp() - baked.exp()).abs().max()),
        **report,
    }
    state.run.save_json("study/edit.json", key, cached)
    return cached, key


def edited_model(state: RunState, instructions: Direction) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A copy of the model with the instruction direction orthogonalised out of every residual writer, and
    what the edit did."""
    from alignlab.refusal.config import EditConfig
    from alignlab.refusal.edit import orthogonalize

    assert state.lm is not None
    edited = copy.deepcopy(state.lm.model)
    rep = orthogonalize(edited, instructions.vector.float(), EditConfig())
    return edited, {
        "exact_equivalence": rep.exact,
        "writers_edited": rep.writers_edited,
        "embeddings_edited": rep.embeddings_edited,
        "untied": rep.untied,
        "notes": rep.notes,
    }


def reference_completions(state: RunState, sets: PromptSets, cfg: StudyConfig) -> tuple[list[str], str]:
    """The base model's greedy completions of the harmless test prompts (CE is measured on them; cached)."""
    from alignlab.models.generate import generate_greedy

    harmless = sets.texts("harmless", "test")
    key = key_of(state.model_id(), harmless, cfg.aux_tokens)
    cached = load_artifact(state, "study/reference.json", key)
    if cached is None:
        assert state.lm is not None and state.fmt is not None
        replies = generate_greedy(state.lm.model, state.fmt, harmless, cfg.aux_tokens, cfg.gen_batch_size)
        cached = {"completions": [x.text for x in replies]}
        state.run.save_json("study/reference.json", key, cached)
    return cached["completions"], key
