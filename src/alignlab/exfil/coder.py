"""Lossless text compression under a probability model: compress / decompress / statistics (spec §6).

Text mode codes the model's tokens when the input is valid UTF-8 and detok(tok(x)) == x; otherwise
byte mode codes each byte under ``model.byte_model()`` and sets the header flag. The token count is
in the header, so no end-of-stream symbol is coded.

A :class:`LockstepModel` (an LM) codes the tokens as ``streams`` contiguous pieces of ⌈n/streams⌉
tokens that advance together: at step j the coder codes token j of stream 0, 1, …, in that order, into
one arithmetic code. The decoder recovers the same tokens in the same order and feeds them back, so
both sides make the same forward calls. More streams cost bits (each restarts without context) and
save time (one forward serves them all); :func:`auto_streams` picks one stream per ``STREAM_TOKENS``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from alignlab.errors import AlignlabError, DataError
from alignlab.exfil.arith import MAX_TOTAL, Decoder, Encoder
from alignlab.exfil.container import FLAG_BYTE_MODE, ContainerError, Header, pack, unpack
from alignlab.exfil.probmodels import LockstepModel, ProbabilityModel, T

STREAM_TOKENS = 2048
"""Tokens per stream chosen by :func:`auto_streams`. On the project README (5,933 tokens) 2 streams code
in fewer bits/token than the pre-issue-22 coder (one stream, W_ctx 1024) and 3 in 1.5 % more."""
MAX_STREAMS = 8
Progress = Callable[[int], None]
"""Called with the number of tokens coded since the previous call."""
AnyModel = ProbabilityModel | LockstepModel


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
    streams: int = 1

    @property
    def overhead_bits(self) -> float:
        return self.payload_bits - self.ideal_bits


@dataclass(frozen=True)
class Compressed:
    blob: bytes
    stats: CodeStats


def _symbols(data: bytes, model: AnyModel) -> tuple[list[int], AnyModel, bool]:
    try:
        data.decode("utf-8")
        ids = model.tokenize(data)
    except UnicodeDecodeError:
        ids = None
    if ids is not None:
        return ids, model, False
    return list(data), model.byte_model(), True


def is_lockstep(model: Any) -> bool:
    return hasattr(model, "advance") and hasattr(model, "frequencies")


def auto_streams(n_tokens: int, stream_tokens: int = STREAM_TOKENS, max_streams: int = MAX_STREAMS) -> int:
    """One stream per ``stream_tokens`` tokens (at least 1, at most ``max_streams``)."""
    return max(1, min(max_streams, n_tokens // stream_tokens))


def _session(model: Any) -> Any:
    return model.session() if hasattr(model, "session") else nullcontext()


def _encode_sequential(ids: list[int], m: ProbabilityModel, enc: Encoder, progress: Progress | None) -> float:
    m.reset()
    ideal = 0.0
    log2 = math.log2
    for i, sym in enumerate(ids):
        total = m.total()
        cum, freq = m.interval(sym)
        enc.encode(cum, freq, total)
        ideal += log2(total) - log2(freq)
        m.push(sym)
        if progress is not None and i % 64 == 63:
            progress(64)
    if progress is not None and len(ids) % 64:
        progress(len(ids) % 64)
    return ideal


def _encode_lockstep(ids: list[int], m: LockstepModel, streams: int, enc: Encoder,
                     progress: Progress | None) -> float:
    from alignlab.exfil.lm import symbol_interval

    n = len(ids)
    length = -(-n // streams)
    m.start(streams)
    ideal = 0.0
    log2 = math.log2
    for j in range(length):
        freqs = m.frequencies()  # [streams, V]
        step = []
        for b in range(streams):
            i = b * length + j
            if i >= n:  # this stream has ended (only the last one can be shorter)
                step.append(m.pad_id)
                continue
            cum, freq = symbol_interval(freqs[b], ids[i])
            enc.encode(cum, freq, T)
            ideal += log2(T) - log2(freq)
            step.append(ids[i])
        if progress is not None:
            progress(sum(b * length + j < n for b in range(streams)))
        if j + 1 < length:
            m.advance(step)
    return ideal


def compress(data: bytes, model: AnyModel, streams: int | None = None, progress: Progress | None = None) -> Compressed:
    """Arithmetic-code ``data`` under ``model``; returns the ALC1 container and its statistics.

    ``streams`` (LMs only, text mode): how many lockstep streams; None picks :func:`auto_streams`.
    """
    data = bytes(data)
    ids, m, byte_mode = _symbols(data, model)
    enc = Encoder()
    lockstep = is_lockstep(m)
    n_streams = 1
    if lockstep:
        n_streams = max(1, min(streams or auto_streams(len(ids)), len(ids)))
    elif streams not in (None, 1) and not is_lockstep(model):  # (byte mode of an LM: one stream)
        raise AlignlabError(f"streams: {streams} needs a language model; this model codes one stream")
    with _session(m):
        if lockstep:
            ideal = _encode_lockstep(ids, m, n_streams, enc, progress)
        else:
            ideal = _encode_sequential(ids, m, enc, progress)
    payload = enc.finish()
    header = Header(FLAG_BYTE_MODE if byte_mode else 0, model.fingerprint, len(ids), len(data),
                    zlib.crc32(data), payload.bits, n_streams)
    blob = pack(header, payload.data)
    stats = CodeStats(len(ids), len(data), len(blob), len(payload.data), payload.bits, ideal, byte_mode, n_streams)
    return Compressed(blob, stats)


def check_fingerprint(header: Header, model: AnyModel) -> None:
    """Refuse to decode with a different model or thread count, naming the expected and the found one."""
    found, want = model.fingerprint, header.fingerprint
    if found != want and found.threads != want.threads and found.digest == want.digest:
        raise ContainerError(
            f"thread count mismatch: the file was coded with {want.threads} torch thread(s) but this decoder runs "
            f"{found.threads}, which can change the logits' rounding; decode with --threads {want.threads}")
    if found != want:
        raise ContainerError(
            f"model fingerprint mismatch: the file was coded with {want.describe()} but the "
            f"decoder has {found.describe()}; decode with --model {want.name}")


def _decode_sequential(dec: Decoder, m: ProbabilityModel, n: int, progress: Progress | None) -> list[int]:
    m.reset()
    ids = []
    for i in range(n):
        total = m.total()
        if total > MAX_TOTAL:
            raise DataError(f"model frequency total {total} exceeds the coder's limit {MAX_TOTAL}")
        sym, cum, freq = m.find(dec.target(total))
        dec.consume(cum, freq, total)
        m.push(sym)
        ids.append(sym)
        if progress is not None and i % 64 == 63:
            progress(64)
    if progress is not None and n % 64:
        progress(n % 64)
    return ids


def _decode_lockstep(dec: Decoder, m: LockstepModel, n: int, streams: int,
                     progress: Progress | None) -> list[int]:
    from alignlab.exfil.lm import find_symbol

    length = -(-n // streams)
    out = [[] for _ in range(streams)]
    m.start(streams)
    for j in range(length):
        freqs = m.frequencies()  # [streams, V]
        step = []
        for b in range(streams):
            if b * length + j >= n:
                step.append(m.pad_id)
                continue
            sym, cum, freq = find_symbol(freqs[b], dec.target(T))
            dec.consume(cum, freq, T)
            out[b].append(sym)
            step.append(sym)
        if progress is not None:
            progress(sum(b * length + j < n for b in range(streams)))
        if j + 1 < length:
            m.advance(step)
    return [sym for stream in out for sym in stream]


def decompress(blob: bytes, model: AnyModel, progress: Progress | None = None) -> bytes:
    """Inverse of :func:`compress`; raises :class:`ContainerError` instead of returning wrong bytes."""
    header, payload = unpack(bytes(blob))
    check_fingerprint(header, model)
    if header.byte_mode and header.n_tokens != header.n_bytes:
        raise ContainerError("container header is inconsistent (byte mode needs one token per byte)")
    if header.n_tokens > header.n_bytes:
        raise ContainerError("container header is inconsistent (more tokens than bytes)")
    m = model.byte_model() if header.byte_mode else model
    lockstep = is_lockstep(m)
    if header.streams != 1 and not lockstep:
        raise ContainerError(f"container header is inconsistent ({header.streams} streams for a one-stream model)")
    dec = Decoder(payload)
    with _session(m):
        if lockstep:
            ids = _decode_lockstep(dec, m, header.n_tokens, header.streams, progress)
        else:
            ids = _decode_sequential(dec, m, header.n_tokens, progress)
    data = bytes(ids) if header.byte_mode else model.detokenize(ids)
    if len(data) != header.n_bytes or zlib.crc32(data) != header.crc:
        raise ContainerError(
            f"decoded bytes fail the CRC32/length check (expected {header.n_bytes} B crc {header.crc:08x}, got "
            f"{len(data)} B crc {zlib.crc32(data):08x}): the model's logits differ from the encoder's; decode "
            "on the same software stack")
    return data
