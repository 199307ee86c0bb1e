"""bfloat16 autocast only where the hardware multiplies bfloat16 natively (models/precision.py)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from alignlab.models import precision
from alignlab.models.tiny import tiny_model


def test_autocast_only_for_float32_models_on_bf16_hardware(monkeypatch):
    model, _ = tiny_model("llama")
    monkeypatch.setattr(precision, "bf16_fast", lambda device: True)
    ctx = precision.bf16_autocast(model)
    assert not isinstance(ctx, nullcontext)
    with ctx:
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        out = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert out.dtype == torch.bfloat16
    assert isinstance(precision.bf16_autocast(model, enabled=False), nullcontext)
    assert isinstance(precision.bf16_autocast(tiny_model("llama", dtype=torch.bfloat16)[0]), nullcontext)
    monkeypatch.setattr(precision, "bf16_fast", lambda device: False)  # emulated bf16 would be slower
    assert isinstance(precision.bf16_autocast(model), nullcontext)


def test_cpu_flags_decide(monkeypatch, tmp_path):
    from pathlib import Path

    info = tmp_path / "cpuinfo"
    real = Path.read_text

    def fake(path, *a, **k):
        return info.read_text() if str(path) == "/proc/cpuinfo" else real(path, *a, **k)

    monkeypatch.setattr(Path, "read_text", fake)
    for flags, want in (("fpu avx2 avx512f", False), ("fpu avx512f avx512_bf16", True), ("fpu amx_bf16", True)):
        info.write_text(f"processor : 0\nflags\t\t: {flags}\n")
        precision.cpu_has_bf16.cache_clear()
        assert precision.cpu_has_bf16() is want
    precision.cpu_has_bf16.cache_clear()
