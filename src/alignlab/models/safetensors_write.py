"""Add a tensor to a saved transformers checkpoint as its own shard, written a block of rows at a time.

The tensor never exists whole in memory: ``blocks`` yields consecutive row blocks, each written as it comes
(used for a tied head kept as a correction, ``refusal/head.py``). The checkpoint becomes (or stays) sharded:
its shards are renamed ``model-0000i-of-0000N.safetensors`` with the new one last, and
``model.safetensors.index.json`` maps every tensor to its file, which is how ``from_pretrained`` finds them.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable
from pathlib import Path

import torch

from alignlab.errors import AlignlabError
from alignlab.io import write_json_atomic
from alignlab.models.safetensors_read import DTYPES, entries

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
_CODES = {v: k for k, v in DTYPES.items()}


def write_blocks(path: Path, name: str, dtype: torch.dtype, shape: tuple[int, ...],
                 blocks: Iterable[torch.Tensor]) -> int:
    """One-tensor .safetensors file from row blocks (dim 0) of ``shape``; returns the data's byte count."""
    nbytes = math.prod(shape) * dtype.itemsize
    header = json.dumps({name: {"dtype": _CODES[dtype], "shape": list(shape), "data_offsets": [0, nbytes]},
                         "__metadata__": {"format": "pt"}}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # data starts 8-byte aligned
    written = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for block in blocks:
            data = block.detach().to("cpu", dtype).contiguous()
            f.write(data.view(torch.uint8).numpy().data if data.numel() else b"")
            written += data.numel() * data.element_size()
    if written != nbytes:
        raise AlignlabError(f"{path}: wrote {written} bytes of {name}, expected {nbytes}")
    return nbytes


def add_shard(directory: Path, name: str, dtype: torch.dtype, shape: tuple[int, ...],
              blocks: Iterable[torch.Tensor]) -> Path:
    """Write ``name`` into ``directory`` (a ``save_pretrained`` output) as a new last shard; returns its path."""
    index_path = directory / INDEX
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        files = sorted(set(index["weight_map"].values()))
    elif (directory / SINGLE).is_file():
        files = [SINGLE]
    else:
        raise AlignlabError(f"{directory} holds no {SINGLE} or {INDEX} to add {name} to")
    n = len(files) + 1
    names = [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    weight_map: dict[str, str] = {}
    total = 0
    for old, new in zip(files, names):
        for entry in entries(directory / old):
            weight_map[entry.name] = new
            total += entry.end - entry.begin
    if name in weight_map:
        raise AlignlabError(f"the checkpoint in {directory} already stores {name}")
    for old, new in zip(files, names):
        (directory / old).rename(directory / f".{new}")  # two steps: a new name may be an old one's
    for new in names[:-1]:
        (directory / f".{new}").rename(directory / new)
    last = names[-1]
    total += write_blocks(directory / last, name, dtype, shape, blocks)
    weight_map[name] = last
    write_json_atomic(index_path, {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    return directory / last


def untie_config(directory: Path) -> None:
    """Mark a saved config.json (and its text_config, for multimodal configs) as having an untied head."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config["tie_word_embeddings"] = False
    if isinstance(config.get("text_config"), dict):
        config["text_config"]["tie_word_embeddings"] = False
    write_json_atomic(path, config)


__all__ = ["add_shard", "untie_config", "write_blocks"]
