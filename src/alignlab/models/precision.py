"""Reduced-precision matmuls where they pay: bfloat16 autocast for cheap screening passes (issue 19 §2).

On a CPU with native bfloat16 dot products (AVX512-BF16 or AMX) a bfloat16 matmul runs about 2x the float32 rate
(measured on the 2-core dev machine: 400 vs 190 GFLOPS at [261, 576] x [576, 1536]); without them bfloat16 is
emulated and slower, so autocast is used only where the hardware has it. Scores move at the 1e-2 level, which is
fine for ranking candidates before they are scored in full precision, not for the scores a pick is made on.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (Linux /proc/cpuinfo flags avx512_bf16 or amx_bf16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def bf16_fast(device: torch.device) -> bool:
    """Whether bfloat16 matmuls beat float32 on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def bf16_autocast(model: torch.nn.Module, enabled: bool = True) -> AbstractContextManager:
    """bfloat16 autocast for a float32 ``model`` on hardware where it is faster; otherwise a no-op context."""
    param = next(model.parameters(), None)
    if not enabled or param is None or param.dtype != torch.float32 or not bf16_fast(param.device):
        return nullcontext()
    return torch.autocast(param.device.type, dtype=torch.bfloat16, cache_enabled=False)


__all__ = ["bf16_autocast", "bf16_fast", "cpu_has_bf16"]
