"""Lossless text compression under a probability model: compress / decompress / statistics (spec §6).

Text mode codes the model's tokens when the input is valid UTF-8 and detok(tok(x)) == x; otherwise
byte mode codes each byte under ``model.byte_model()`` and sets the header flag. The token count is
in the header, so no end-of-stream symbol is coded.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

from alignlab.errors import DataError
from alignlab.exfil.arith import MAX_TOTAL, Decoder, Encoder
from alignlab.exfil.container import FLAG_BYTE_MODE, ContainerError, Header, pack, unpack
from alignlab.exfil.probmodels import ProbabilityModel


@dataclass(frozen=True)
class CodeStats:
    n_tokens: int
    raw_bytes: int
    container_bytes: int
    payload_bytes: int
    payload_bits: int
    ideal_bits: float
    """Σ −log2(f_t / total_t): the code length the quantised model allows (spec §6 bound: + 2)."""
    byte_mode: bool

    @property
    def overhead_bits(self) -> float:
        return self.payload_bits - self.ideal_bits


@dataclass(frozen=True)
class Compressed:
    blob: bytes
    stats: CodeStats


def _symbols(data: bytes, model: ProbabilityModel) -> tuple[list[int], ProbabilityModel, bool]:
    try:
        data.decode("utf-8")
        ids = model.tokenize(data)
    except UnicodeDecodeError:
        ids = None
    if ids is not None:
        return ids, model, False
    return list(data), model.byte_model(), True


def compress(data: bytes, model: ProbabilityModel) -> Compressed:
    """Arithmetic-code ``data`` under ``model``; returns the ALC1 container and its statistics."""
    ids, m, byte_mode = _symbols(bytes(data), model)
    m.reset()
    enc = Encoder()
    ideal = 0.0
    log2 = math.log2
    for sym in ids:
        total = m.total()
        cum, freq = m.interval(sym)
        enc.encode(cum, freq, total)
        ideal += log2(total) - log2(freq)
        m.push(sym)
    payload = enc.finish()
    header = Header(FLAG_BYTE_MODE if byte_mode else 0, model.fingerprint, len(ids), len(data),
                    zlib.crc32(data), payload.bits)
    blob = pack(header, payload.data)
    stats = CodeStats(len(ids), len(data), len(blob), len(payload.data), payload.bits, ideal, byte_mode)
    return Compressed(blob, stats)


def check_fingerprint(header: Header, model: ProbabilityModel) -> None:
    """Refuse to decode with a different model, naming the expected and the found one."""
    if header.fingerprint != model.fingerprint:
        raise ContainerError(
            f"model fingerprint mismatch: the file was coded with {header.fingerprint.describe()} but the "
            f"decoder has {model.fingerprint.describe()}; decode with --model {header.fingerprint.name}")


def decompress(blob: bytes, model: ProbabilityModel) -> bytes:
    """Inverse of :func:`compress`; raises :class:`ContainerError` instead of returning wrong bytes."""
    header, payload = unpack(bytes(blob))
    check_fingerprint(header, model)
    if header.byte_mode and header.n_tokens != header.n_bytes:
        raise ContainerError("container header is inconsistent (byte mode needs one token per byte)")
    if header.n_tokens > header.n_bytes:
        raise ContainerError("container header is inconsistent (more tokens than bytes)")
    m = model.byte_model() if header.byte_mode else model
    m.reset()
    dec = Decoder(payload)
    ids = []
    for _ in range(header.n_tokens):
        total = m.total()
        if total > MAX_TOTAL:
            raise DataError(f"model frequency total {total} exceeds the coder's limit {MAX_TOTAL}")
        sym, cum, freq = m.find(dec.target(total))
        dec.consume(cum, freq, total)
        m.push(sym)
        ids.append(sym)
    data = bytes(ids) if header.byte_mode else model.detokenize(ids)
    if len(data) != header.n_bytes or zlib.crc32(data) != header.crc:
        raise ContainerError(
            f"decoded bytes fail the CRC32/length check (expected {header.n_bytes} B crc {header.crc:08x}, got "
            f"{len(data)} B crc {zlib.crc32(data):08x}): the model's logits differ from the encoder's; decode "
            "on the same software stack")
    return data
