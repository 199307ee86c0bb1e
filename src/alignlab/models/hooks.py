"""One context manager for every hook alignlab attaches.

Hook points are named uniformly across architectures:

- ``block_in``  : the residual stream entering block l (resid_pre[l]); a forward pre-hook on the block.
- ``attn_out``  : the attention write that is added to the residual (after the post-attention norm in
                  Gemma-2/3 and OLMo-2, the raw attention output elsewhere).
- ``mlp_out``   : the MLP/MoE write that is added to the residual (after the post-MLP norm where present).
- ``block_out`` : the residual stream leaving block l.

A hook function receives the hidden-state tensor ``[batch, seq, d]`` and the layer index, and returns a
replacement tensor or ``None`` (observe only). Tensors are never modified in place. Hooks are removed
in ``finally``, so the model is clean again even when the body raises; they keep firing inside
``model.generate`` (KV-cached decoding included), since they sit on modules, not on a forward call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn

from alignlab.errors import AlignlabError
from alignlab.models.anatomy import Anatomy, map_model

HookPoint = Literal["block_in", "attn_out", "mlp_out", "block_out"]
HOOK_POINTS: tuple[str, ...] = ("block_in", "attn_out", "mlp_out", "block_out")
HookFn = Callable[[torch.Tensor, int], torch.Tensor | None]


def _replace_output(output: Any, new: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return new
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    raise AlignlabError(f"cannot replace the hidden state in a {type(output).__name__} output")


def _output_tensor(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


def _forward_hook(fn: HookFn, layer: int) -> Callable:
    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        new = fn(_output_tensor(output), layer)
        return None if new is None else _replace_output(output, new)

    return hook


def _pre_hook(fn: HookFn, layer: int) -> Callable:
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if args and isinstance(args[0], torch.Tensor):
            new = fn(args[0], layer)
            return None if new is None else ((new, *args[1:]), kwargs)
        if isinstance(kwargs.get("hidden_states"), torch.Tensor):
            new = fn(kwargs["hidden_states"], layer)
            return None if new is None else (args, {**kwargs, "hidden_states": new})
        raise AlignlabError(f"block {layer}: hidden states not found among the block's call arguments")

    return hook


def point_module(anatomy: Anatomy, point: str, layer: int) -> nn.Module:
    """The module whose (pre-)hook implements ``point`` at ``layer``."""
    if not 0 <= layer < anatomy.n_layers:
        raise AlignlabError(f"layer {layer} out of range: the model has {anatomy.n_layers} blocks (0..{anatomy.n_layers - 1})")
    block = anatomy.block_maps[layer]
    if point in ("block_in", "block_out"):
        return anatomy.module(block.name)
    if point == "attn_out":
        return anatomy.module(block.post_attn_norm or block.attn)
    if point == "mlp_out":
        return anatomy.module(block.post_mlp_norm or block.mlp)
    raise AlignlabError(f"unknown hook point {point!r}; choose one of {', '.join(HOOK_POINTS)}")


@contextmanager
def hook_context(
    model: nn.Module,
    hooks: Sequence[tuple[str, int, HookFn]],
    anatomy: Anatomy | None = None,
    *,
    extra_forward: Sequence[tuple[nn.Module, HookFn]] = (),
) -> Iterator[Anatomy]:
    """Attach ``(point, layer, fn)`` hooks for the duration of the ``with`` body; always removes them.

    ``extra_forward`` attaches plain forward hooks to arbitrary modules (e.g. the embedding), with
    layer index -1.
    """
    anatomy = anatomy or map_model(model)
    handles = []
    try:
        for point, layer, fn in hooks:
            module = point_module(anatomy, point, layer)
            if point == "block_in":
                handles.append(module.register_forward_pre_hook(_pre_hook(fn, layer), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(_forward_hook(fn, layer)))
        for module, fn in extra_forward:
            handles.append(module.register_forward_hook(_forward_hook(fn, -1)))
        yield anatomy
    finally:
        for handle in handles:
            handle.remove()


def all_layers(point: str, fn: HookFn, n_layers: int) -> list[tuple[str, int, HookFn]]:
    return [(point, layer, fn) for layer in range(n_layers)]
