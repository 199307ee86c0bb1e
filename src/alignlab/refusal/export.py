"""Export an edited model as an ordinary transformers checkpoint (safetensors + config + tokenizer +
provenance JSON), atomically, and check what was written against the model in memory.

The check reads the written safetensors back in bounded chunks with plain reads (no memory map, whose pages
would stay resident), so it never holds a second copy of the model (issue 19 §3): every stored tensor must
equal the in-memory one bit for bit, and every in-memory tensor must be stored or share storage with one that
is (tied weights). A corrected tied head (``head.py``) is compared with its effective weight, row block by row block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from alignlab.errors import AlignlabError
from alignlab.models.loading import save_pretrained_atomic

CHUNK_BYTES = 4 * 2**20
"""Bytes read back per piece: each piece has ~3 temporaries of its size (the read, the reference, the difference),
and pieces of 16 MiB raised the export's peak by 120 MiB on SmolLM2 (glibc keeps such blocks on its heap)."""


def export_model(model: torch.nn.Module, tokenizer: Any, target: Path, provenance: dict[str, Any]) -> float:
    """Save ``model`` to ``target``; returns max |stored - in memory| over every weight (0.0 when exact).

    A tied head kept as a correction (``head.py``) is written untied: its effective weight as a shard of its own,
    computed a block of rows at a time, and ``tie_word_embeddings: false`` in config.json."""
    from alignlab.refusal.head import correction

    corr = correction(model)
    finish = None
    if corr is not None:
        def finish(directory: Path) -> None:
            from alignlab.models.safetensors_write import add_shard, untie_config
            from alignlab.refusal.head import head_key, head_rows

            weight = corr.embedding.weight
            add_shard(directory, head_key(model, corr), weight.dtype, tuple(weight.shape), head_rows(corr))
            untie_config(directory)

    save_pretrained_atomic(model, tokenizer, Path(target), provenance, finish)
    return read_back(model, Path(target))


def read_back(model: torch.nn.Module, target: Path) -> float:
    """max |Δ| between the checkpoint's tensors and ``model``'s, reading the files in bounded chunks (no
    memory map, so no second resident copy of the model)."""
    from alignlab.models.safetensors_read import chunks, entries
    from alignlab.refusal.head import correction, head_key

    state = model.state_dict()
    corr = correction(model)
    head = head_key(model, corr) if corr is not None else None
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
            for start, values in chunks(file, entry, CHUNK_BYTES):
                ref = (flat[start:start + values.numel()] if entry.name != head else
                       _head_values(corr, start, values.numel(), mine.shape[-1]))
                diff = values.to(ref.device, ref.dtype).sub_(ref)  # in place: the read buffer is ours
                worst = max(worst, float(diff.abs_().max()))
            stored_ptrs.add(mine.data_ptr())
    missing = [n for n, t in state.items() if t.data_ptr() not in stored_ptrs and t.numel()]
    if missing:
        raise AlignlabError(f"the export at {target} lacks {len(missing)} tensors (first: {missing[0]})")
    return worst


def _head_values(corr: Any, start: int, n: int, d: int) -> torch.Tensor:
    """Flat values start:start+n of a corrected head's effective weight [vocab, d], from the rows they span."""
    first, stop = start // d, -(-(start + n) // d)
    rows = corr.rows(first, stop).reshape(-1)
    return rows[start - first * d:start - first * d + n]


__all__ = ["export_model", "read_back"]
