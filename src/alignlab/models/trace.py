"""Data-flow tracing used by the anatomy: which sublayer each norm feeds or reads.

One 4-token forward pass with hooks on every direct child of every block records the tensor objects
each child reads and writes. A norm whose output is a sublayer's input sits *before* it; a norm whose
input is a sublayer's output sits *after* it (Gemma-2/3, OLMo-2). Names are never consulted for this.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from alignlab.errors import ArchitectureError


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    value = kwargs.get("hidden_states")
    return value if isinstance(value, torch.Tensor) else None


def _out_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return False
    return a is b or (a.shape == b.shape and a.data_ptr() == b.data_ptr() and a.stride() == b.stride())


def trace_norm_placement(model: nn.Module, blocks: nn.ModuleList, blocks_name: str) -> list[dict[str, str]]:
    """For every block: {norm child name: "pre_attn" | "post_attn" | "pre_mlp" | "post_mlp"}."""
    from alignlab.models.anatomy import ATTN_CONTAINERS, MLP_CONTAINERS, is_norm

    d_model = int(model.get_input_embeddings().weight.shape[1])
    records: list[dict[str, dict[str, torch.Tensor | None]]] = [{} for _ in blocks]
    handles = []
    for i, block in enumerate(blocks):
        for child_name, child in block.named_children():
            if not any(True for _ in child.parameters()):
                continue

            def pre(mod, args, kwargs, i=i, child_name=child_name):
                records[i].setdefault(child_name, {})["in"] = _first_tensor(args, kwargs)

            def post(mod, args, kwargs, output, i=i, child_name=child_name):
                records[i].setdefault(child_name, {})["out"] = _out_tensor(output)

            handles.append(child.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(child.register_forward_hook(post, with_kwargs=True))
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(input_ids=torch.tensor([[1, 2, 3, 4]], device=device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()

    result: list[dict[str, str]] = []
    for i, block in enumerate(blocks):
        rec = records[i]
        sublayers = {
            name: ("attn" if name in ATTN_CONTAINERS else "mlp")
            for name in rec
            if name in ATTN_CONTAINERS or name in MLP_CONTAINERS
        }
        placements: dict[str, str] = {}
        for child_name, child in block.named_children():
            if child_name not in rec or not is_norm(child, d_model):
                continue
            for sub, role in sublayers.items():
                if _same(rec[child_name].get("out"), rec[sub].get("in")):
                    placements[child_name] = f"pre_{role}"
                elif _same(rec[child_name].get("in"), rec[sub].get("out")):
                    placements[child_name] = f"post_{role}"
            if child_name not in placements:
                raise ArchitectureError(
                    f"{blocks_name}.{i}.{child_name}: norm neither feeds nor reads a known sublayer "
                    f"({', '.join(sublayers) or 'none found'})"
                )
        result.append(placements)
    return result
