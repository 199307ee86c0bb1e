"""Export an edited model as an ordinary transformers checkpoint (safetensors + config + tokenizer +
provenance JSON), atomically, and check what was written against the model in memory.

The check reads the written safetensors back in bounded chunks with plain reads (no memory map, whose pages
would stay resident), so it never holds a second copy of the model (issue 19 §3): every stored tensor must
equal the in-memory one bit for bit, and every in-memory tensor must be stored or share storage with one that
is (tied weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from alignlab.errors import AlignlabError
from alignlab.models.loading import save_pretrained_atomic


def export_model(model: torch.nn.Module, tokenizer: Any, target: Path, provenance: dict[str, Any]) -> float:
    """Save ``model`` to ``target``; returns max |stored - in memory| over every weight (0.0 when exact)."""
    save_pretrained_atomic(model, tokenizer, Path(target), provenance)
    return read_back(model, Path(target))


def read_back(model: torch.nn.Module, target: Path) -> float:
    """max |Δ| between the checkpoint's tensors and ``model``'s, reading the files in bounded chunks (no
    memory map, so no second resident copy of the model)."""
    from alignlab.models.safetensors_read import chunks, entries

    state = model.state_dict()
    stored_ptrs: set[int] = set()
    worst = 0.0
    files = sorted(target.glob("*.safetensors"))
    if not files:
        raise AlignlabError(f"the export at {target} holds no .safetensors file")
    for file in files:
        for entry in entries(file):
            mine = state.get(entry.name)
            if mine is None:
                raise AlignlabError(f"the export at {target} stores {entry.name}, which the model does not have")
            if entry.shape != tuple(mine.shape):
                raise AlignlabError(f"the export at {target} stores {entry.name} with shape {entry.shape}, "
                                    f"not {tuple(mine.shape)}")
            flat = mine.detach().reshape(-1)  # (numel,) a view for the contiguous weights of a model
            for start, values in chunks(file, entry):
                ref = flat[start:start + values.numel()]
                worst = max(worst, float((values.to(ref.device, ref.dtype) - ref).abs().max()))
            stored_ptrs.add(mine.data_ptr())
    missing = [n for n, t in state.items() if t.data_ptr() not in stored_ptrs and t.numel()]
    if missing:
        raise AlignlabError(f"the export at {target} lacks {len(missing)} tensors (first: {missing[0]})")
    return worst


__all__ = ["export_model", "read_back"]
