"""Configuration of the egress proxy (spec §7) and its request-size arithmetic."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from alignlab.errors import AlignlabError
from alignlab.exfil.units import parse_size

HEADER_MAX = 512
"""Upper bound on the status line + header block of any response the proxy forwards. Headers come from a
fixed allow-list (no upstream header value is copied), so the block is ~300 bytes; tests assert the bound."""
ERROR_MAX = 320
"""Upper bound on a proxy-written error body or SSE error event (messages are cut to 150 characters)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ProxyConfig:
    """Egress meter and limiter in front of an OpenAI-compatible server (both on loopback)."""

    upstream: str = "http://127.0.0.1:8000"
    """Base URL of the OpenAI-compatible upstream (loopback unless --allow-remote-upstream)."""
    db: str = "egress.sqlite"
    """SQLite file holding the bucket, ledger and audit log (shared by several proxies if you like)."""
    capacity: str = "100MB"
    """Bucket capacity B_max in bytes (SI or IEC suffixes)."""
    rate: float = 0.0
    """Refill rate r in bytes/s; 0 = lifetime cap (the post's "total upload" framing)."""
    host: str = "127.0.0.1"
    """Address to bind; loopback only."""
    port: int = 0
    """Port to bind; 0 = an ephemeral port (printed on start-up)."""
    enforce: Literal["raw", "compressed"] = "raw"
    """Unit the budget enforces: raw response bytes, or the compressed-equivalent bytes (3 B/token bound)."""
    comp_model: str = "zstd"
    """Compressed-equivalent meter: zstd (-19), ngram, or an LM spec for the §6 arithmetic coder."""
    max_tokens_cap: int = 4096
    """Largest max_tokens a request may ask for."""
    default_max_tokens: int = 256
    """max_tokens injected when a request has none."""
    n_cap: int = 4
    """Largest n (choices per request)."""
    per_token_bound: int = 96
    """Raw bytes reserved per token: longest token's UTF-8 bytes (16) × JSON-escaping worst case (6)."""
    header_allowance: int = 1024
    """Bytes reserved for the status line and headers (>= 512: the proxy's fixed header block always fits)."""
    body_allowance: int = 2048
    """Bytes reserved for the JSON envelope of a non-streamed response or an error body (>= 320)."""
    chunk_envelope: int = 400
    """Bytes reserved per streamed token for its SSE chunk envelope and chunked framing."""
    comp_allowance: int = 128
    """Compressed-mode bytes reserved beyond 3 B/token (container header, zstd frame)."""
    upstream_timeout: float = 60.0
    """Seconds to wait for the upstream (connect + each read) before 504/upstream_timeout."""
    max_body: int = 1 << 20
    """Largest request body in bytes (413 above it)."""
    allow_remote_upstream: bool = False
    """Permit a non-loopback upstream (the proxy itself still binds loopback only)."""

    def __post_init__(self) -> None:
        parse_size(self.capacity, "capacity")
        if not (math.isfinite(self.rate) and self.rate >= 0):
            raise AlignlabError(f"rate: must be >= 0 bytes/s, got {self.rate}")
        if not is_loopback(self.host):
            raise AlignlabError(f"host: the proxy binds loopback only, got {self.host!r}; use 127.0.0.1")
        parts = urlsplit(self.upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AlignlabError(f"upstream: expected a URL like http://127.0.0.1:8000, got {self.upstream!r}")
        if not is_loopback(parts.hostname) and not self.allow_remote_upstream:
            raise AlignlabError(f"upstream: {parts.hostname} is not loopback; pass --allow-remote-upstream to "
                                "proxy a remote server")
        for name in ("max_tokens_cap", "default_max_tokens", "n_cap", "per_token_bound", "header_allowance",
                     "body_allowance", "chunk_envelope", "comp_allowance", "max_body"):
            if getattr(self, name) < 1:
                raise AlignlabError(f"{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)}")
        # the reservation must always hold the proxy's own headers and an error ending (bytes <= charged)
        for name, least in (("header_allowance", HEADER_MAX), ("body_allowance", ERROR_MAX)):
            if getattr(self, name) < least:
                raise AlignlabError(f"{name.replace('_', '-')}: must be >= {least} bytes, got {getattr(self, name)}")
        if self.default_max_tokens > self.max_tokens_cap:
            raise AlignlabError("default_max_tokens: must not exceed --max-tokens-cap")
        if not (self.upstream_timeout > 0):
            raise AlignlabError(f"upstream_timeout: must be > 0 s, got {self.upstream_timeout}")

    @property
    def capacity_bytes(self) -> float:
        return parse_size(self.capacity, "capacity")

    def raw_reservation(self, n: int, max_tokens: int, stream: bool) -> int:
        """R = header allowance + n·max_tokens·per_token_bound + envelope allowance (per chunk if streaming)."""
        tokens = n * max_tokens
        if stream:
            return self.header_allowance + self.body_allowance + tokens * (self.per_token_bound + self.chunk_envelope)
        return self.header_allowance + self.body_allowance * n + tokens * self.per_token_bound

    def comp_reservation(self, n: int, max_tokens: int) -> int:
        """Compressed mode: 3 B (24 bits, spec §6) per token plus a fixed allowance per choice."""
        return n * (self.comp_allowance + 3 * max_tokens)
