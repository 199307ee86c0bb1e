"""One proxied request after its reservation: forward upstream, write to the client, count every byte.

``sent`` is the exact number of bytes handed to the client's transport: status line and headers, the
body, and the chunked-encoding framing of streamed responses. A write that would take ``sent`` past
the reservation (minus what an error ending still needs) is never made: the stream ends with an SSE
error event, or a whole response becomes a 502, and the request is logged as ``reservation_overrun``.

No upstream header is copied to the client: the proxy writes its own fixed allow-list (Content-Type mapped
to one of a few constants, the request id, a fixed Server), so the header block never exceeds
``HEADER_MAX`` <= ``header_allowance``, whatever the upstream sends (a hostile upstream once sent an
8,000-byte Content-Type past the budget this way).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from alignlab.exfil.meter import SSETextCollector, text_of_response
from alignlab.exfil.proxy_config import ERROR_MAX

if TYPE_CHECKING:
    from alignlab.exfil.proxy import EgressProxy


EOF_BYTES = 5  # b"0\r\n\r\n", the last chunk of a chunked body
ERROR_EVENT_MAX = ERROR_MAX  # an SSE error event, with its message, never exceeds this
MESSAGE_MAX = 150  # error messages are cut to this many characters so error bodies stay <= ERROR_MAX
SERVER = "alignlab-egress"  # fixed, so aiohttp's version string cannot change the header size
CONTENT_TYPES = {"application/json": "application/json", "text/event-stream": "text/event-stream",
                 "text/plain": "text/plain; charset=utf-8"}
"""The only Content-Type values the proxy sends; any other upstream media type becomes octet-stream."""


def safe_content_type(upstream_value: str | None) -> str:
    """Map an upstream Content-Type to a fixed constant; parameters (``; x=…``) are never forwarded."""
    media = (upstream_value or "application/json").split(";", 1)[0].strip().lower()
    return CONTENT_TYPES.get(media, "application/octet-stream")


def forwarded_status(status: int) -> bool:
    """Statuses passed through: 2xx and 4xx/5xx with a body. 1xx, 204/205, 3xx (no Location is
    forwarded) and anything outside 200–599 become a 502."""
    return (200 <= status < 300 and status not in (204, 205)) or 400 <= status < 600


def error_body(message: str, etype: str, code: str | None, **extra: Any) -> bytes:
    """OpenAI-style error JSON: {"error": {"message", "type", "code", …}}."""
    return json.dumps({"error": {"message": message, "type": etype, "code": code, **extra}}).encode()


def header_bytes(resp: Any, version: Any) -> int:
    """Size of the serialised status line and headers aiohttp sends for ``resp`` (after prepare)."""
    line = f"HTTP/{version.major}.{version.minor} {resp.status} {resp.reason}\r\n"
    return len(line.encode()) + sum(len(f"{k}: {v}\r\n".encode()) for k, v in resp.headers.items()) + 2


class Forward:
    def __init__(self, proxy: EgressProxy, request: Any, rid: str, limit: int, comp_limit: int | None) -> None:
        self.proxy, self.request, self.rid = proxy, request, rid
        self.limit, self.comp_limit = limit, comp_limit
        self.sent = 0
        self.status = 0
        self.note = ""
        self.text = ""
        self.stream = False
        self.chunked = False
        self.collector = SSETextCollector()
        self.resp: Any = None

    def charged_raw(self) -> int:
        """Bytes to charge: what we counted, or aiohttp's own count if that is larger (never less)."""
        writer = getattr(self.resp, "_payload_writer", None)
        return max(self.sent, int(getattr(writer, "output_size", 0) or 0))

    def _wire(self, n: int) -> int:
        return n + len(f"{n:x}\r\n") + 2 if self.chunked else n

    async def run(self, body: bytes | None, stream: bool) -> Any:
        """Forward ``body`` (serialised JSON, or None for GET) and answer the client within ``limit`` bytes."""
        import aiohttp

        cfg = self.proxy.cfg
        url = cfg.upstream.rstrip("/") + self.request.path
        headers = {"Accept-Encoding": "identity"}
        if "Authorization" in self.request.headers:
            headers["Authorization"] = self.request.headers["Authorization"]
        session = self.proxy.session
        try:
            if body is None:
                ctx = session.get(url, headers=headers, allow_redirects=False)
            else:
                headers["Content-Type"] = "application/json"
                ctx = session.post(url, data=body, headers=headers, allow_redirects=False)
            async with ctx as up:
                if stream and up.status == 200:
                    self.stream = True
                    return await self._stream(up)
                return await self._whole(up)
        except asyncio.TimeoutError:
            if self.resp is None:
                return await self._error(504, f"upstream did not answer within {cfg.upstream_timeout} s",
                                         "upstream_timeout", "upstream_timeout")
            return self.resp
        except aiohttp.ClientError as exc:
            if self.resp is None:
                return await self._error(502, f"upstream {cfg.upstream} failed: {type(exc).__name__}",
                                         "upstream_error", "upstream_error")
            return self.resp
        except ConnectionResetError:
            self.note = self.note or "client_disconnected"
            return self.resp

    async def _comp_over(self, text: str) -> bool:
        if self.comp_limit is None:
            return False
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.proxy.comp, self.proxy.comp_size, text) > self.comp_limit

    async def _whole(self, up: Any) -> Any:
        if not forwarded_status(up.status):
            return await self._error(502, f"upstream answered with status {up.status}, which the proxy does not "
                                     "forward", "upstream_error", "upstream_error")
        room = self.limit - self.proxy.cfg.header_allowance  # our header block is <= HEADER_MAX <= allowance
        data = bytearray()
        while True:
            chunk = await up.content.read(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > room:
                return await self._error(502, f"upstream response exceeds this request's egress reservation of "
                                         f"{self.limit} bytes", "upstream_error", "reservation_overrun")
        self.text = text_of_response(bytes(data))
        if await self._comp_over(self.text):
            self.text = ""
            return await self._error(502, f"upstream text exceeds the compressed reservation of {self.comp_limit} "
                                     "bytes", "upstream_error", "reservation_overrun")
        return await self._send(up.status, safe_content_type(up.headers.get("Content-Type")), bytes(data))

    async def _error(self, status: int, message: str, etype: str, code: str) -> Any:
        self.note = code
        return await self._send(status, "application/json", error_body(message[:MESSAGE_MAX], etype, code))

    async def _send(self, status: int, ctype: str, payload: bytes) -> Any:
        from aiohttp import web

        resp = web.StreamResponse(status=status, headers={"Content-Type": ctype, "Server": SERVER,
                                                          "X-Egress-Request-Id": self.rid})
        resp.content_length = len(payload)
        self.resp = resp
        await resp.prepare(self.request)
        self.status = status
        self.sent = header_bytes(resp, self.request.version) + len(payload)
        if payload:
            await resp.write(payload)
        await resp.write_eof()
        return resp

    async def _stream(self, up: Any) -> Any:
        import aiohttp
        from aiohttp import web

        resp = web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "Server": SERVER,
            "X-Egress-Request-Id": self.rid})
        self.resp = resp
        await resp.prepare(self.request)
        self.status = 200
        self.chunked = resp.headers.get("Transfer-Encoding", "").lower() == "chunked"
        self.sent = header_bytes(resp, self.request.version)
        pending = b""
        try:
            async for data in up.content.iter_any():
                pending += data
                cut = pending.rfind(b"\n\n") + 2  # forward whole SSE events only
                if cut >= 2:
                    if not await self._forward_events(pending[:cut]):
                        break
                    pending = pending[cut:]
                elif len(pending) > self.limit:
                    await self._overrun()
                    break
            else:
                if pending:
                    await self._forward_events(pending)
        except asyncio.TimeoutError:
            await self._event_error("upstream stopped sending", "upstream_timeout", "upstream_timeout")
        except aiohttp.ClientError as exc:
            await self._event_error(f"upstream failed: {type(exc).__name__}", "upstream_error", "upstream_error")
        await resp.write_eof()
        self.sent += EOF_BYTES if self.chunked else 0
        return resp

    async def _forward_events(self, data: bytes) -> bool:
        """Write whole SSE events if they fit the reservation (keeping room for an error ending)."""
        w = self._wire(len(data))
        tail = self._wire(ERROR_EVENT_MAX) + (EOF_BYTES if self.chunked else 0)
        if self.sent + w + tail > self.limit:
            await self._overrun()
            return False
        trial = self.collector.copy()
        trial.feed(data)
        if await self._comp_over(trial.text):  # meter only text that is actually sent
            await self._overrun(f"stream stopped: the compressed reservation of {self.comp_limit} bytes is used up")
            return False
        self.collector = trial
        await self.resp.write(data)
        self.sent += w
        return True

    async def _overrun(self, message: str = "") -> None:
        await self._event_error(message or f"stream stopped: the egress reservation of {self.limit} bytes is "
                                "used up", "upstream_error", "reservation_overrun")

    async def _event_error(self, message: str, etype: str, code: str) -> None:
        self.note = code
        event = b"data: " + error_body(message[:MESSAGE_MAX], etype, code) + b"\n\n"
        assert len(event) <= ERROR_EVENT_MAX
        await self.resp.write(event)
        self.sent += self._wire(len(event))
