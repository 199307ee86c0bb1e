"""What the proxy meters besides raw bytes: the generated text and its compressed-equivalent size."""

from __future__ import annotations

import json
from collections.abc import Callable


def text_of_response(body: bytes) -> str:
    """``message.content`` / ``text`` of every choice of a non-streamed OpenAI response ('' if none)."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    return _choice_text(obj, "message")


def _choice_text(obj: object, key: str) -> str:
    if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
        return ""
    parts = []
    for ch in obj["choices"]:
        if not isinstance(ch, dict):
            continue
        inner = ch.get(key)
        if isinstance(inner, dict) and isinstance(inner.get("content"), str):
            parts.append(inner["content"])
        if isinstance(ch.get("text"), str):
            parts.append(ch["text"])
    return "".join(parts)


class SSETextCollector:
    """Incrementally parses ``data: {...}`` lines of an SSE stream and collects ``delta.content``/``text``."""

    def __init__(self) -> None:
        self._buf = b""
        self.parts: list[str] = []

    def copy(self) -> SSETextCollector:
        other = SSETextCollector()
        other._buf, other.parts = self._buf, list(self.parts)
        return other

    def feed(self, data: bytes) -> None:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                continue
            try:
                self.parts.append(_choice_text(json.loads(payload), "delta"))
            except (ValueError, UnicodeDecodeError):
                continue

    @property
    def text(self) -> str:
        return "".join(self.parts)


def make_comp_meter(spec: str) -> Callable[[str], int]:
    """Bytes of the generated text after compression: zstd -19, or the §6 coder's ALC1 container."""
    if spec == "zstd":
        import zstandard

        def zstd_size(text: str) -> int:
            return len(zstandard.ZstdCompressor(level=19).compress(text.encode("utf-8"))) if text else 0

        return zstd_size
    from alignlab.exfil.cli_coder import make_model
    from alignlab.exfil.coder import compress

    model = make_model(spec)

    def coder_size(text: str) -> int:
        return compress(text.encode("utf-8"), model).stats.container_bytes if text else 0

    return coder_size
