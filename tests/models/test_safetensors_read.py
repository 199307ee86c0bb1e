import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from alignlab.errors import AlignlabError
from alignlab.models.safetensors_read import chunks, entries


@pytest.fixture
def file(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "a.weight": torch.randn(37, 11, generator=g),
        "b.bias": torch.randn(5, generator=g).to(torch.bfloat16),
        "c.ids": torch.arange(9, dtype=torch.int64),
        "d.empty": torch.zeros(0, 3),
    }
    path = tmp_path / "x.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def test_chunks_rebuild_every_tensor_bit_for_bit(file):
    want = load_file(str(file))
    got = entries(file)
    assert sorted(e.name for e in got) == sorted(want)
    for e in got:
        assert e.dtype == want[e.name].dtype and e.shape == tuple(want[e.name].shape)
        parts = list(chunks(file, e, chunk_bytes=24))  # several pieces, none split inside an element
        assert all(p.numel() * e.dtype.itemsize <= 24 for _, p in parts)
        assert [s for s, _ in parts] == [sum(p.numel() for _, p in parts[:i]) for i in range(len(parts))]
        flat = torch.cat([p for _, p in parts]) if parts else torch.zeros(0, dtype=e.dtype)
        assert torch.equal(flat.reshape(e.shape), want[e.name])


def test_malformed_files_are_one_line_errors(tmp_path, file):
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x02")
    with pytest.raises(AlignlabError, match="shorter than its header length"):
        entries(short)
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(AlignlabError, match="header length"):
        entries(huge)
    raw = file.read_bytes()
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(raw[:-8])
    with pytest.raises(AlignlabError, match="inconsistent offsets"):
        entries(truncated)
    (n,) = struct.unpack("<Q", raw[:8])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw[:8] + b"{" * n + raw[8 + n:])
    with pytest.raises(AlignlabError, match="not JSON"):
        entries(bad)
