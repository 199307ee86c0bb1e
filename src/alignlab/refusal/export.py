"""Export an edited model as an ordinary transformers checkpoint (safetensors + config + tokenizer +
provenance JSON), atomically, and check what was written against the model in memory.

The check reads the written safetensors back one tensor at a time (memory-mapped), so it never holds a
second copy of the model (issue 19 §3): every stored tensor must equal the in-memory one bit for bit, and
every in-memory tensor must be stored or share storage with one that is (tied weights).
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
    """max |Δ| between the checkpoint's tensors and ``model``'s, streaming one stored tensor at a time."""
    from safetensors import safe_open

    state = model.state_dict()
    stored_ptrs: set[int] = set()
    worst = 0.0
    files = sorted(target.glob("*.safetensors"))
    if not files:
        raise AlignlabError(f"the export at {target} holds no .safetensors file")
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            names = f.keys()  # a safe_open handle is not iterable
            for name in names:
                if name not in state:
                    raise AlignlabError(f"the export at {target} stores {name}, which the model does not have")
                mine = state[name]
                theirs = f.get_tensor(name)
                if theirs.shape != mine.shape:
                    raise AlignlabError(f"the export at {target} stores {name} with shape {tuple(theirs.shape)}, "
                                        f"not {tuple(mine.shape)}")
                if mine.numel():
                    worst = max(worst, float((theirs.to(mine.device, mine.dtype) - mine).abs().max()))
                stored_ptrs.add(mine.data_ptr())
    missing = [n for n, t in state.items() if t.data_ptr() not in stored_ptrs and t.numel()]
    if missing:
        raise AlignlabError(f"the export at {target} lacks {len(missing)} tensors (first: {missing[0]})")
    return worst


__all__ = ["export_model", "read_back"]
