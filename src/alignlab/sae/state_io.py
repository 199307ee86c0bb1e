"""Trainer state as JSON + safetensors: no pickle, so loading a checkpoint can never run code (issue 12).

A nested state (dicts, lists, tuples, numbers, strings, tensors, NumPy arrays) is split into a JSON tree and
a flat dict of tensors. Each tensor is replaced in the tree by ``{"__tensor__": "t<i>"}``; tuples, NumPy arrays
and dicts with non-string keys (the optimiser's integer parameter ids) carry a tag so they come back as the
same Python types. Reading uses ``json.loads`` and ``safetensors.torch.load_file`` only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from alignlab.errors import AlignlabError
from alignlab.io import save_tensors_atomic, write_text_atomic

_TAGS = ("__tensor__", "__tuple__", "__items__", "__ndarray__")


def pack(tree: Any) -> tuple[Any, dict[str, Tensor]]:
    """(JSON-ready tree, tensors by key) for a nested state; raises TypeError on anything else."""
    tensors: dict[str, Tensor] = {}

    def enc(obj: Any) -> Any:
        if isinstance(obj, Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = obj.detach().cpu().clone()  # own storage: safetensors refuses shared tensors
            return {"__tensor__": key}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
        if isinstance(obj, tuple):
            return {"__tuple__": [enc(v) for v in obj]}
        if isinstance(obj, list):
            return [enc(v) for v in obj]
        if isinstance(obj, dict):
            if all(isinstance(k, str) and k not in _TAGS for k in obj):
                return {k: enc(v) for k, v in obj.items()}
            return {"__items__": [[enc(k), enc(v)] for k, v in obj.items()]}
        raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")

    return enc(tree), tensors


def unpack(tree: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of ``pack``."""
    if isinstance(tree, list):
        return [unpack(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__tuple__" in tree:
        return tuple(unpack(v, tensors) for v in tree["__tuple__"])
    if "__ndarray__" in tree:
        return np.asarray(tree["__ndarray__"], dtype=np.dtype(tree["dtype"]))
    if "__items__" in tree:
        return {_hashable(unpack(k, tensors)): unpack(v, tensors) for k, v in tree["__items__"]}
    return {k: unpack(v, tensors) for k, v in tree.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def save_state(directory: Path, stem: str, state: Any) -> None:
    """Write ``stem.json`` and ``stem.safetensors`` into ``directory`` (each atomically)."""
    tree, tensors = pack(state)
    save_tensors_atomic(directory / f"{stem}.safetensors", tensors)
    write_text_atomic(directory / f"{stem}.json", json.dumps(tree) + "\n")


def load_state(directory: Path, stem: str) -> Any:
    """Read what ``save_state`` wrote; any damage is one AlignlabError naming the folder."""
    from safetensors.torch import load_file

    try:
        tree = json.loads((directory / f"{stem}.json").read_text(encoding="utf-8"))
        tensors = load_file(str(directory / f"{stem}.safetensors"))
        return unpack(tree, tensors)
    except Exception as e:  # noqa: BLE001 - a damaged file of any kind is one user-facing error
        raise AlignlabError(
            f"cannot read checkpoint {directory} ({type(e).__name__}); delete it to resume from an older one or start over"
        ) from None


__all__ = ["load_state", "pack", "save_state", "unpack"]
