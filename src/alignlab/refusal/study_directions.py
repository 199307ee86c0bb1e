"""Directions the study compares with the instruction direction (issue 16, claims 1 and 2).

- **Response contrasts** (claim 1b, 1c): resid_pre at every layer, teacher-forced, averaged over the tokens of
  a response: (b) harmful prompts followed by the base model's refusals minus the same prompts followed by
  the ablated model's compliances; (c) the base model's responses to harmful prompts minus its responses to
  harmless prompts.
- **Last instruction token** (claim 2): harmful minus harmless mean of resid_pre at the last token of the user
  text, just before the post-instruction tokens (where Zhao et al. 2025 place a separate harmfulness direction).

All means are float64 running sums over the selected token positions; nothing per prompt is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from alignlab.errors import AlignlabError
from alignlab.models.anatomy import map_model
from alignlab.models.chat import ChatFormat
from alignlab.models.hooks import hook_context
from alignlab.refusal.forward import COUNTER, position_ids
from alignlab.refusal.massive import mask_dims


@dataclass(frozen=True)
class Span:
    """One teacher-forced row: token ``ids`` of which positions ``first:last`` are averaged."""

    ids: list[int]
    first: int
    last: int


def mean_resid(model: torch.nn.Module, spans: Sequence[Span], pad_id: int, batch_size: int) -> torch.Tensor:
    """Mean resid_pre over the selected positions of every span, per layer: [n_layers, d] float64."""
    spans = [s for s in spans if s.last > s.first]
    if not spans:
        raise AlignlabError("no tokens to average for a study direction (every response was empty)")
    anatomy = map_model(model)
    device = next(model.parameters()).device
    total = torch.zeros(anatomy.n_layers, anatomy.d_model, dtype=torch.float64)
    count = 0
    select: dict[str, torch.Tensor] = {}

    def grab(x: torch.Tensor, layer: int) -> None:
        total[layer] += x[select["mask"]].double().sum(0).cpu()  # [n_selected, d] summed
        return None

    hooks = [("block_in", layer, grab) for layer in range(anatomy.n_layers)]
    with hook_context(model, hooks, anatomy), torch.no_grad():
        for start in range(0, len(spans), batch_size):
            chunk = spans[start : start + batch_size]
            width = max(len(s.ids) for s in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            chosen = torch.zeros_like(ids, dtype=torch.bool)
            for i, s in enumerate(chunk):  # left padding, as everywhere else
                offset = width - len(s.ids)
                ids[i, offset:] = torch.tensor(s.ids)
                mask[i, offset:] = 1
                chosen[i, offset + s.first : offset + s.last] = True
            ids, mask = ids.to(device), mask.to(device)
            select["mask"] = chosen.to(device)
            COUNTER.forwards += 1
            model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False)
            count += int(chosen.sum())
    if not torch.isfinite(total).all():
        raise AlignlabError("non-finite activations while averaging a study direction: check the model dtype")
    return total / count


def response_spans(fmt: ChatFormat, prompts: Sequence[str], responses: Sequence[str]) -> list[Span]:
    """Prompt (rendered) + response tokens; the response tokens are the averaged span."""
    out = []
    for prompt, response in zip(prompts, responses):
        prompt_ids = fmt.token_ids(prompt)
        reply_ids = fmt.tokenizer(response, add_special_tokens=False)["input_ids"]
        out.append(Span(prompt_ids + reply_ids, len(prompt_ids), len(prompt_ids) + len(reply_ids)))
    return out


def last_instruction_spans(fmt: ChatFormat, prompts: Sequence[str]) -> list[Span]:
    """The rendered prompt; the averaged span is the one token before the post-instruction tokens."""
    out = []
    for prompt in prompts:
        ids = fmt.token_ids(prompt)
        at = len(ids) - fmt.n_eoi - 1
        if (
            at >= 0 and tuple(ids[-fmt.n_eoi :]) == fmt.eoi_ids
        ):  # boundary mismatches are excluded (spec §2.3)
            out.append(Span(ids, at, at + 1))
    return out


@dataclass(frozen=True)
class ResponseSets:
    """Generated (cached) responses on TRAIN prompts and the judged refusal flags."""

    harmful_prompts: list[str]
    harmless_prompts: list[str]
    base_harmful: list[str]
    base_harmless: list[str]
    ablated_harmful: list[str]
    base_harmful_refused: list[bool]
    ablated_harmful_refused: list[bool]


@dataclass(frozen=True)
class ContrastDirections:
    refusal_vs_compliance: torch.Tensor
    """(b) [n_layers, d]: harmful prompt + base refusal  minus  harmful prompt + ablated compliance."""
    base_responses: torch.Tensor
    """(c) [n_layers, d]: base responses to harmful prompts  minus  base responses to harmless prompts."""
    last_instruction: torch.Tensor
    """[n_layers, d]: harmful minus harmless resid_pre at the last user-text token."""
    counts: dict[str, int]
    notes: list[str]


def masked(cd: ContrastDirections, dims: list[int]) -> ContrastDirections:
    """cd with the massive-activation coordinates zeroed in every direction, as the instruction candidates are
    (``refusal.massive``); cd itself when there are none."""
    if not dims:
        return cd
    return replace(
        cd,
        refusal_vs_compliance=mask_dims(cd.refusal_vs_compliance, dims),
        base_responses=mask_dims(cd.base_responses, dims),
        last_instruction=mask_dims(cd.last_instruction, dims),
    )


def contrast_directions(
    model: torch.nn.Module,
    fmt: ChatFormat,
    rs: ResponseSets,
    harmful_train: Sequence[str],
    harmless_train: Sequence[str],
    batch_size: int,
) -> ContrastDirections:
    """Every non-instruction direction of the study, from the cached responses and the train prompts."""
    pad = fmt.tokenizer.pad_token_id or 0
    notes: list[str] = []
    # (b) keep judged refusals on one side and judged compliances (non-empty) on the other
    refusals = [(p, r) for p, r, f in zip(rs.harmful_prompts, rs.base_harmful, rs.base_harmful_refused) if f]
    complies = [
        (p, r)
        for p, r, f in zip(rs.harmful_prompts, rs.ablated_harmful, rs.ablated_harmful_refused)
        if not f and r.strip()
    ]
    if not refusals or not complies:
        notes.append(
            f"refusal vs compliance: {len(refusals)} judged refusals and {len(complies)} compliances; "
            "used every response unfiltered"
        )
        refusals = list(zip(rs.harmful_prompts, rs.base_harmful))
        complies = list(zip(rs.harmful_prompts, rs.ablated_harmful))

    def mean_of(pairs: list[tuple[str, str]]) -> torch.Tensor:
        return mean_resid(
            model, response_spans(fmt, [p for p, _ in pairs], [r for _, r in pairs]), pad, batch_size
        )

    b = mean_of(refusals) - mean_of(complies)
    if not bool(b.abs().max() > 0):
        notes.append(
            "refusal vs compliance: the direction is zero (the ablated model's responses equal the base "
            "model's), so ablating it changes nothing"
        )
    c = mean_of(list(zip(rs.harmful_prompts, rs.base_harmful))) - mean_of(
        list(zip(rs.harmless_prompts, rs.base_harmless))
    )
    last = mean_resid(model, last_instruction_spans(fmt, harmful_train), pad, batch_size) - mean_resid(
        model, last_instruction_spans(fmt, harmless_train), pad, batch_size
    )
    counts = {
        "refusals": len(refusals),
        "compliances": len(complies),
        "harmful_responses": len(rs.base_harmful),
        "harmless_responses": len(rs.base_harmless),
        "harmful_train": len(harmful_train),
        "harmless_train": len(harmless_train),
    }
    return ContrastDirections(b, c, last, counts, notes)
