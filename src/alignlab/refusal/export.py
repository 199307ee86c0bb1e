"""Export an edited model as an ordinary transformers checkpoint (safetensors + config + tokenizer +
provenance JSON), atomically, and check that reloading it reproduces the evaluated logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from alignlab.io import write_json_atomic
from alignlab.models.chat import Encoded
from alignlab.models.loading import save_pretrained_atomic
from alignlab.refusal.forward import position_ids


def export_model(model: torch.nn.Module, tokenizer: Any, target: Path, provenance: dict[str, Any],
                 probe: Encoded | None = None) -> float | None:
    """Save ``model`` to ``target``; returns max |Δlogit| between the reloaded and in-memory model on ``probe``."""
    from transformers import AutoModelForCausalLM

    save_pretrained_atomic(model, tokenizer, Path(target))
    write_json_atomic(Path(target) / "alignlab_provenance.json", provenance)
    if probe is None:
        return None
    reloaded = AutoModelForCausalLM.from_pretrained(target, dtype=next(model.parameters()).dtype)
    reloaded.to(next(model.parameters()).device).eval()
    kw = {"input_ids": probe.input_ids, "attention_mask": probe.attention_mask,
          "position_ids": position_ids(probe.attention_mask)}
    with torch.no_grad():
        a = model(**kw).logits
        b = reloaded(**kw).logits
    return float((a - b).abs().max())
