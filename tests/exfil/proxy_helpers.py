"""Shared helpers for the proxy tests: loopback servers in threads and a byte-counting raw HTTP client."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass

from alignlab.exfil.proxy import EgressProxy
from alignlab.exfil.proxy_config import ProxyConfig
from alignlab.exfil.server import AppThread


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    nbytes: int
    """Every byte received on the socket (status line, headers, framing, body)."""

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-egress-request-id")

    def json(self) -> dict:
        return json.loads(self.body)


def request_bytes(method: str, path: str, body: object = None, raw_body: bytes | None = None) -> bytes:
    data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else b"")
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
    return head.encode() + data


def parse(data: bytes) -> RawResponse:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    body = rest
    if headers.get("transfer-encoding") == "chunked":
        body, pos = b"", 0
        while pos < len(rest):
            end = rest.find(b"\r\n", pos)
            if end < 0:
                break
            size = int(rest[pos:end], 16)
            if size == 0:
                break
            body += rest[end + 2:end + 2 + size]
            pos = end + 2 + size + 2
    return RawResponse(status, headers, body, len(data))


def raw_request(port: int, method: str, path: str, body: object = None, raw_body: bytes | None = None,
                timeout: float = 30.0) -> RawResponse:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request_bytes(method, path, body, raw_body))
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
    return parse(b"".join(chunks))


async def araw_request(port: int, body: object, path: str = "/v1/chat/completions",
                       timeout: float = 60.0) -> tuple[int, bytes]:
    """Async raw POST; returns (bytes received, raw data) even if the connection is cut."""
    received = bytearray()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        writer.write(request_bytes("POST", path, body))
        await writer.drain()

        async def pump() -> None:
            while True:
                c = await reader.read(65536)
                if not c:
                    break
                received.extend(c)

        await asyncio.wait_for(pump(), timeout)
        writer.close()
    except (ConnectionError, OSError, asyncio.TimeoutError):
        pass
    return len(received), bytes(received)


def chat(max_tokens: int = 8, stream: bool = False, **extra: object) -> dict:
    return {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
            "stream": stream, **extra}


class ProxyThread(AppThread):
    def __init__(self, cfg: ProxyConfig) -> None:
        self.proxy = EgressProxy(cfg)
        super().__init__(self.proxy.make_app)

    def ledger(self, request_id: str | None = None) -> list[tuple]:
        """Ledger rows, after waiting (bounded, 10 s) for in-flight settlements to finish."""
        import sqlite3
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            conn = sqlite3.connect(self.proxy.cfg.db)
            n = conn.execute("SELECT COUNT(*) FROM ledger WHERE state = 'reserved'").fetchone()[0]
            conn.close()
            if n == 0:
                break
            time.sleep(0.02)
        conn = sqlite3.connect(self.proxy.cfg.db)
        try:
            if request_id is None:
                return conn.execute("SELECT request_id, state, reserved, charged_raw, charged_comp, charged, "
                                    "status, note FROM ledger").fetchall()
            return conn.execute("SELECT request_id, state, reserved, charged_raw, charged_comp, charged, status, "
                                "note FROM ledger WHERE request_id = ?", (request_id,)).fetchall()
        finally:
            conn.close()
