"""The weight-edit stage, in place: no second copy of the model is ever made (issue 19 §3).

The hooked model's outputs the edit is checked against are measured first (``measure_hooked``), while the
weights are still the base model's; evaluation of the hooked conditions runs next; then ``apply_edit``
orthogonalises the loaded model itself and measures the gap to those stored hooked outputs. After it,
``state.lm.model`` *is* the edited model.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from alignlab.refusal.artifacts import key_of
from alignlab.refusal.forward import position_ids
from alignlab.refusal.intervention import Intervention
from alignlab.refusal.pipeline import RunState, _timed
from alignlab.refusal.prompts import PromptSets
from alignlab.refusal.shared_prefix import shared_logprobs

GAP_PROMPTS = 8
"""Prompts whose every position is compared (max |Δlogit| edited vs hooked)."""
CHECK_BATCH = 8
"""Prompts per forward of the check: right after the edit the process holds the most (the edited writers' private
copies of their pages), so the check's activations are kept small (a batch of 32 peaked ~80 MiB higher on SmolLM2)."""


@dataclass
class Hooked:
    """The hooked model's outputs on the edit-check prompts, measured before the weights change."""

    prompts: list[str]
    logprobs: torch.Tensor
    """Last-position log-probs under the hooks [n, vocab] (float64)."""
    logits: SpilledLogits
    """Logits at every position of each of the first ``GAP_PROMPTS`` prompts, [len_i, vocab] each (float32)."""
    seconds: float


class SpilledLogits:
    """Tensors kept on disk, in a temporary directory of the run, until the edit is checked: in memory they would
    sit through the evaluation and the edit (~0.1 GB on SmolLM2, issue 19 §3). A killed run's directory
    (``.edit_check.*``) is removed as a stale temporary when the run directory is next opened."""

    def __init__(self, run_dir: Path) -> None:
        self.dir, self.n = Path(tempfile.mkdtemp(prefix=".edit_check.", dir=run_dir)), 0

    def append(self, t: torch.Tensor) -> None:
        from safetensors.torch import save_file

        save_file({"t": t.contiguous()}, str(self.dir / f"{self.n}.safetensors"))
        self.n += 1

    def __iter__(self) -> Iterator[torch.Tensor]:
        from safetensors.torch import load_file

        for i in range(self.n):
            yield load_file(str(self.dir / f"{i}.safetensors"))["t"]

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def edit_key(state: RunState) -> str:
    from alignlab.refusal.edit import EDIT_REVISION

    key = key_of(state.keys["intervention"], asdict(state.cfg.edit), EDIT_REVISION)
    state.keys["edit"] = key
    return key


def measure_hooked(state: RunState, sets: PromptSets, chosen: Intervention) -> Hooked | None:
    """What the edit must reproduce; None when ``edit.json`` already holds the comparison."""
    assert state.lm is not None
    if state.run.load_json("edit.json", edit_key(state)) is not None:
        return None
    start = time.perf_counter()
    model = state.lm.model
    prompts = sets.texts("harmless", "val") + sets.texts("harmful", "val")
    lp = shared_logprobs(model, _fmt(state), prompts, CHECK_BATCH, chosen.ablate(model))
    logits = SpilledLogits(state.run.path)
    with chosen.ablate(model):
        for t in _logits(state, prompts[:GAP_PROMPTS]):
            logits.append(t)
    return Hooked(prompts, lp, logits, time.perf_counter() - start)


def apply_edit(state: RunState, chosen: Intervention, hooked: Hooked | None) -> torch.nn.Module:
    """Orthogonalise ``state.lm.model`` in place; write ``edit.json`` (the gap to ``hooked``) when new."""
    assert state.lm is not None
    key = edit_key(state)
    start = time.perf_counter()
    model = state.lm.model
    report = chosen.edit(model, state.cfg.edit, head_mode="correct")
    cached = state.run.load_json("edit.json", key)
    if cached is None:
        assert hooked is not None, "measure_hooked must run before the weights change"
        baked = shared_logprobs(model, _fmt(state), hooked.prompts, CHECK_BATCH)
        gap = float((hooked.logprobs.exp() - baked.exp()).abs().max())
        try:  # one stored prompt in memory at a time
            logit_gap = max((float((h - e).abs().max())
                             for h, e in zip(hooked.logits, _logits(state, hooked.prompts[:GAP_PROMPTS]))),
                            default=0.0)
        finally:
            hooked.logits.close()
        seconds = hooked.seconds + time.perf_counter() - start
        obj: dict[str, Any] = {**asdict(report), "max_abs_prob_diff": gap, "edit_max_abs_logit_diff": logit_gap,
                               "exact_equivalence": report.exact, "in_place": True, "seconds": round(seconds, 3)}
        state.run.save_json("edit.json", key, obj)
        state.results["edit"], state.timings["edit"] = obj, obj["seconds"]
    else:
        _timed(state, "edit", cached, lambda: {})
    return model


def _fmt(state: RunState) -> Any:
    assert state.fmt is not None
    return state.fmt


def _logits(state: RunState, prompts: list[str]) -> Iterator[torch.Tensor]:
    """Logits of ``state.lm.model`` at every position of each prompt, one prompt per forward: [len, vocab]
    float32 each (a batch would hold [batch, width, vocab] plus a masked copy: 0.2 GB at 8 prompts on SmolLM2)."""
    assert state.lm is not None
    for prompt in prompts:
        enc = _fmt(state).encode([prompt], device=state.lm.device, strict=False)
        if not enc.input_ids.numel():
            continue
        with torch.no_grad():
            out = state.lm.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                                 position_ids=position_ids(enc.attention_mask)).logits
        yield out[0].float()


__all__ = ["GAP_PROMPTS", "Hooked", "apply_edit", "measure_hooked"]
