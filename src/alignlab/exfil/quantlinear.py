"""Low-bit linear layers for the LM coder's default ``int4`` compute dtype (spec §6 leaves the dtype free;
encoder and decoder always use the same one, and it is in the container's fingerprint).

Every linear layer but the head becomes :class:`Int4Linear` (int4 weights in groups of ``INT4_GROUP``,
bfloat16 activations, PyTorch's CPU int4 GEMM): ~4x less weight traffic than bfloat16, which is what a
one-token forward on a CPU is bound by. The head becomes :class:`Int8Linear` (per-channel int8).
"""

from __future__ import annotations

from typing import Any

import torch

INT4_GROUP = 32
"""Weights per int4 scale/offset group: the GGUF Q4_1 block size the default model ships in, so its
linear weights d·q + m fit the int4 grid again (up to bfloat16 rounding of d and m)."""

INT8_HEAD = True
"""int8 per-channel head: +0.02 % bits/token on the README's first 600 tokens, half the bfloat16 head's bytes."""

PACK_BLOCK_N = 64
"""The CPU int4 packing interleaves blocks of 64 output rows: packed weights concatenate row-wise only at
multiples of 64 (a test checks that a concatenation computes what the separate layers compute)."""

_INT4_MM = torch.ops.aten._weight_int4pack_mm_for_cpu.default
_INT8_MM = torch.ops.aten._weight_int8pack_mm.default


class Int4Linear(torch.nn.Module):
    """y = x·Wᵀ (+ b) with W dequantised per group as (q − 8)·scale + zero, q in 0…15."""

    def __init__(self, w_packed: torch.Tensor, scale_zero: torch.Tensor, bias: torch.Tensor | None, k: int) -> None:
        super().__init__()
        self.k = k
        self.w_packed = w_packed  # [N, K/2] uint8, packed in blocks of PACK_BLOCK_N rows
        self.scale_zero = scale_zero  # [K/INT4_GROUP, N, 2] bfloat16
        self.bias = bias  # [N] bfloat16 or None

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear) -> Int4Linear:
        w = linear.weight.detach().float()  # [N, K]
        n, k = w.shape
        groups = w.reshape(n, k // INT4_GROUP, INT4_GROUP)
        lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        scale = ((hi - lo) / 15).clamp_min(1e-12)
        q = ((groups - lo) / scale).round().clamp(0, 15).to(torch.int32).reshape(n, k)
        zero = lo + 8 * scale  # the kernel dequantises (q − 8)·scale + zero
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2)
        scale_zero = torch.cat([scale, zero], -1).permute(1, 0, 2).contiguous().to(torch.bfloat16)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        return cls(packed, scale_zero, bias, k)

    @staticmethod
    def can_concat(parts: list[Int4Linear]) -> bool:
        return (len({p.k for p in parts}) == 1 and len({p.bias is None for p in parts}) == 1
                and all(p.w_packed.shape[0] % PACK_BLOCK_N == 0 for p in parts[:-1]))

    @classmethod
    def concat(cls, parts: list[Int4Linear]) -> Int4Linear:
        """One layer computing ``torch.cat([p(x) for p in parts], -1)`` bit for bit (the kernel computes
        every output column on its own; a test checks the equality). See :meth:`can_concat`."""
        if not cls.can_concat(parts):
            raise ValueError("concat: the layers need one input size, biases on all or none, and output sizes "
                             f"that are multiples of {PACK_BLOCK_N} (but the last)")
        bias = None if parts[0].bias is None else torch.cat([p.bias for p in parts])
        return cls(torch.cat([p.w_packed for p in parts]), torch.cat([p.scale_zero for p in parts], 1), bias,
                   parts[0].k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _INT4_MM(x.reshape(-1, self.k).to(torch.bfloat16), self.w_packed, INT4_GROUP, self.scale_zero)
        y = y.reshape(*x.shape[:-1], -1)  # [..., N]
        return y if self.bias is None else y + self.bias


class Int8Linear(torch.nn.Module):
    """Per-output-channel int8 weights (the head: int4 there costs bits, bfloat16 twice the traffic)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()  # [N, K]
        scale = (w.abs().amax(1) / 127).clamp_min(1e-12)  # [N]
        self.k = w.shape[1]
        self.w_int8 = (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
        self.scale = scale.to(torch.bfloat16)
        self.bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _INT8_MM(x.reshape(-1, self.k).to(torch.bfloat16), self.w_int8, self.scale)
        y = y.reshape(*x.shape[:-1], -1)  # [..., N]
        return y if self.bias is None else y + self.bias


def int4_linears(model: Any) -> int:
    """Swap every nn.Linear but the output head whose shape the CPU int4 kernel accepts for
    :class:`Int4Linear`; the head gets :class:`Int8Linear` (int4 there cost +0.8 % bits/token on the
    README, int4 layers +0.1 %). Returns the number of int4 layers."""
    head = model.get_output_embeddings()
    if isinstance(head, torch.nn.Linear) and INT8_HEAD:
        model.set_output_embeddings(Int8Linear(head))
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and child is not head and child.in_features % INT4_GROUP == 0 \
                    and child.out_features % 16 == 0:
                setattr(parent, name, Int4Linear.from_linear(child))
                swapped += 1
    return swapped
