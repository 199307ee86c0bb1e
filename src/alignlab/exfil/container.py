"""The ``ALC1`` container (spec §6), with a trailing CRC32 of the whole container added.

Layout (integers are unsigned LEB128 varints unless noted)::

    b"ALC1" | version u8 | flags u8 | len+name | fingerprint sha256 (32 B) | len+dtype | W_ctx | T
    | threads | n_tokens | n_bytes | streams | crc32(original) u32 BE | payload_bits | payload
    | crc32(all before) u32 BE

flags bit 0 = byte mode. Version 2 added ``threads`` (torch intra-op threads of the logits, part of the
model fingerprint) and ``streams`` (the token sequence is cut into that many contiguous streams, coded
in lockstep; 1 for byte mode and integer models). The trailing CRC makes any flipped bit or truncation a specific error
before decoding starts; the CRC of the original bytes then checks the decoded output.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from alignlab.errors import DataError
from alignlab.exfil.probmodels import Fingerprint

MAGIC = b"ALC1"
VERSION = 2
FLAG_BYTE_MODE = 1


class ContainerError(DataError):
    """The container is malformed, truncated, corrupted or made for another model."""


@dataclass(frozen=True)
class Header:
    flags: int
    fingerprint: Fingerprint
    n_tokens: int
    n_bytes: int
    crc: int
    payload_bits: int
    streams: int = 1

    @property
    def byte_mode(self) -> bool:
        return bool(self.flags & FLAG_BYTE_MODE)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Reader:
    def __init__(self, blob: bytes) -> None:
        self.blob, self.pos = blob, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.blob):
            raise ContainerError(f"container is truncated (inside the {what}); re-copy the complete file")
        out = self.blob[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self, what: str) -> int:
        n = shift = 0
        while True:
            b = self.take(1, what)[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n
            if shift > 63:
                raise ContainerError(f"container field {what} is corrupt (varint too long); re-copy the file")


def pack(header: Header, payload: bytes) -> bytes:
    fp = header.fingerprint
    name, dtype = fp.name.encode(), fp.dtype.encode()
    body = b"".join([
        MAGIC, bytes([VERSION, header.flags]), _varint(len(name)), name, fp.digest, _varint(len(dtype)), dtype,
        _varint(fp.wctx), _varint(fp.total), _varint(fp.threads), _varint(header.n_tokens),
        _varint(header.n_bytes), _varint(header.streams), header.crc.to_bytes(4, "big"), _varint(header.payload_bits), payload,
    ])
    return body + zlib.crc32(body).to_bytes(4, "big")


def unpack(blob: bytes) -> tuple[Header, bytes]:
    """Parse and integrity-check a container; returns the header and the payload."""
    if blob[:4] != MAGIC:
        raise ContainerError("not an ALC1 container (bad magic); pass a file written by `alignlab exfil compress`")
    r = _Reader(blob)
    r.take(4, "magic")
    version, flags = r.take(2, "version")
    if version != VERSION:
        raise ContainerError(f"container version {version} is not supported (this build reads {VERSION})")
    name = r.take(r.varint("model name"), "model name").decode("utf-8", "replace")
    digest = r.take(32, "fingerprint")
    dtype = r.take(r.varint("dtype"), "dtype").decode("ascii", "replace")
    wctx, total, threads = r.varint("W_ctx"), r.varint("T"), r.varint("threads")
    n_tokens, n_bytes, streams = r.varint("token count"), r.varint("byte length"), r.varint("streams")
    crc = int.from_bytes(r.take(4, "CRC32"), "big")
    bits = r.varint("payload length")
    need = (bits + 7) // 8
    if len(blob) < r.pos + need + 4:
        raise ContainerError(
            f"container is truncated: payload needs {need} bytes + 4 CRC bytes, found {len(blob) - r.pos}; "
            "re-copy the complete file")
    payload = blob[r.pos:r.pos + need]
    end = r.pos + need
    if len(blob) > end + 4:
        raise ContainerError(f"container has {len(blob) - end - 4} unexpected trailing bytes; re-copy the file")
    if zlib.crc32(blob[:end]) != int.from_bytes(blob[end:end + 4], "big"):
        raise ContainerError("container checksum mismatch: the file is corrupted (flipped bits?); re-copy it")
    if not 1 <= streams <= max(n_tokens, 1):
        raise ContainerError(f"container header is inconsistent ({streams} streams for {n_tokens} tokens)")
    fp = Fingerprint(name, digest, dtype, wctx, total, threads)
    return Header(flags, fp, n_tokens, n_bytes, crc, bits, streams), payload
