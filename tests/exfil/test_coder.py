"""LM arithmetic coder with the n-gram and a tiny random LM: exact round trips, container rejections."""

from __future__ import annotations

import json
import math
import random
import zlib

import numpy as np
import pytest

from alignlab.cli import main
from alignlab.exfil.coder import compress, decompress
from alignlab.exfil.container import ContainerError, Header, pack, unpack
from alignlab.exfil.lm import LMProbabilityModel, quantize
from alignlab.exfil.probmodels import NGramModel, T, UniformBytes

SPECIAL = ["", "\x00\x01\x02\x7f", "😀🙈🚀 emoji", "中文字符和日本語のテキスト", "tab\tnewline\r\n", "naïve café"]


def random_inputs(n: int, seed: int = 0) -> list[bytes]:
    """n byte strings of length 0–4096: random bytes (invalid UTF-8), NUL/control bytes, emoji, CJK, empty.

    Lengths are log-uniform (plus 0 and 4096 exactly) to keep the suite fast on 2 shared cores.
    """
    rng = random.Random(seed)
    out = [b"", rng.randbytes(4096), ("中😀\x00a" * 1024).encode()[:4096]]
    while len(out) < n:
        length = int(math.exp(rng.uniform(0, math.log(4097)))) - 1
        kind = rng.randrange(4)
        if kind == 0:
            data = rng.randbytes(length)
        elif kind == 1:
            data = bytes(rng.choice([0, 1, 7, 9, 10, 13, 27, 127, 255, 65]) for _ in range(length))
        else:
            pieces = SPECIAL + ["the quick brown fox ", "jumps over the lazy dog. "]
            text = "".join(rng.choice(pieces) for _ in range(length // 4 + 1))
            data = text.encode("utf-8")[:length]  # may cut a code point: invalid UTF-8 again
        out.append(data)
    return out


def test_ngram_round_trip_1000_strings_within_bound():
    model = NGramModel()
    byte_modes = 0
    for data in random_inputs(1000):
        comp = compress(data, model)
        assert decompress(comp.blob, model) == data
        assert comp.stats.payload_bits <= comp.stats.ideal_bits + 2
        byte_modes += comp.stats.byte_mode
        try:
            data.decode("utf-8")
            assert not comp.stats.byte_mode
        except UnicodeDecodeError:
            assert comp.stats.byte_mode
    assert 100 < byte_modes < 900


def test_ngram_compresses_repetitive_text():
    text = ("all work and no play makes jack a dull boy. " * 60).encode()
    comp = compress(text, NGramModel())
    assert comp.stats.container_bytes < len(text) / 5


def test_quantize_properties():
    rng = np.random.default_rng(0)
    for v in (2, 300, 49152):
        logits = rng.normal(0, 5, size=v).astype(np.float32)
        f = quantize(logits)
        assert f.sum() == T and f.min() >= 1
        p = np.exp(logits.astype(np.float64) - logits.max())
        p /= p.sum()
        assert np.all(f >= np.floor(p * (T - v)) + 1)
        assert np.array_equal(f, quantize(logits.copy()))
    # ties go to the lower id: equal logits, remainder handed out in id order
    f = quantize(np.zeros(3, dtype=np.float32))
    assert f.tolist() == [5592406, 5592405, 5592405]
    # a dominant token: the floor costs at most -log2(1 - V/T) bits
    f = quantize(np.array([50.0] + [0.0] * 999, dtype=np.float32))
    assert -math.log2(f[0] / T) <= -math.log2(1 - 1000 / T) + 1e-9


@pytest.fixture(scope="module")
def tiny_lm():
    from alignlab.models.tiny import tiny_model

    model, tok = tiny_model("llama", seed=0)
    return LMProbabilityModel(model, tok, "tiny-llama", wctx=16)


def test_tiny_lm_round_trip_with_window_restarts(tiny_lm):
    for data in [b"", b"hello", "Grüße 😀 中文, a sentence long enough to wrap the 16-token window twice over.".encode(),
                 b"\xff\xfe invalid utf-8", b"nul\x00byte"]:
        comp = compress(data, tiny_lm)
        assert decompress(comp.blob, tiny_lm) == data
        assert comp.stats.payload_bits <= comp.stats.ideal_bits + 2
    assert compress(b"\xff\xfe", tiny_lm).stats.byte_mode  # uniform 256-way: 8 bits per byte
    assert compress(b"\xff\xfe", tiny_lm).stats.ideal_bits == 16


def test_rejections_are_specific():
    model = NGramModel()
    data = ("The container must refuse corrupted input, never return wrong text. " * 20).encode()
    blob = compress(data, model).blob
    header, payload = unpack(blob)
    # every single flipped bit is caught (checked on a sample of positions incl. header and payload)
    for pos in list(range(0, len(blob), 7)) + [len(blob) - 1]:
        bad = bytearray(blob)
        bad[pos] ^= 1 << (pos % 8)
        with pytest.raises(ContainerError) as exc:
            decompress(bytes(bad), model)
        assert any(w in str(exc.value) for w in ("checksum", "magic", "truncated", "version", "trailing"))
    for cut in (3, 20, len(blob) // 2, len(blob) - 1):
        with pytest.raises(ContainerError, match="truncated|magic"):
            decompress(blob[:cut], model)
    # payload corrupted but container CRC recomputed: the CRC32 of the decoded bytes refuses it
    flipped = bytes([payload[0] ^ 0x10]) + payload[1:]
    with pytest.raises(ContainerError, match="CRC32"):
        decompress(pack(header, flipped), model)
    # another model: fingerprint mismatch names both
    other = NGramModel(increment=8)
    with pytest.raises(ContainerError, match=r"fingerprint mismatch.*ngram2.*sha256") as exc:
        decompress(blob, other)
    assert header.fingerprint.digest.hex()[:12] in str(exc.value)
    with pytest.raises(ContainerError, match="fingerprint"):
        decompress(blob, UniformBytes())


def test_header_fields_round_trip():
    model = NGramModel()
    data = "ünïcödé".encode()
    comp = compress(data, model)
    header, payload = unpack(comp.blob)
    assert isinstance(header, Header) and comp.blob[:4] == b"ALC1"
    assert header.n_bytes == len(data) and header.n_tokens == len(data) and header.crc == zlib.crc32(data)
    assert header.fingerprint == model.fingerprint and header.fingerprint.total == T
    assert len(payload) == (header.payload_bits + 7) // 8


def test_cli_compress_decompress_bench_ngram(tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_bytes(("Arithmetic coding under a shared model. " * 40).encode() + b"\xff")
    alc, back = tmp_path / "in.alc", tmp_path / "back.txt"
    assert main(["exfil", "compress", str(src), "-o", str(alc), "--model", "ngram", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["byte_mode"] is True and stats["container_bytes"] == alc.stat().st_size
    assert json.loads((tmp_path / "in.alc.json").read_text())["raw_bytes"] == src.stat().st_size
    assert main(["exfil", "decompress", str(alc), "-o", str(back)]) == 0  # model taken from the container
    assert back.read_bytes() == src.read_bytes()
    alc.write_bytes(alc.read_bytes()[:-3])
    assert main(["exfil", "decompress", str(alc), "-o", str(back)]) == 2
    assert "truncated" in capsys.readouterr().err
    prose = tmp_path / "prose.txt"
    prose.write_text("The harbour town wakes slowly in winter, and the boats come back. " * 30)
    assert main(["exfil", "bench", str(prose), "--model", "ngram", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    for key in ("bits_per_token", "lm_bytes", "gzip_bytes", "zstd_bytes", "ideal_bits", "overhead_bits"):
        assert key in rep
    assert rep["within_bound"] and rep["verified"] and rep["zstd_bytes"] > 0
    assert rep["bits_per_token"] == pytest.approx(rep["payload_bits"] / rep["n_tokens"])
    assert main(["exfil", "bench", str(prose), "--model", "ngram"]) == 0
    assert "zstd -19" in capsys.readouterr().out
