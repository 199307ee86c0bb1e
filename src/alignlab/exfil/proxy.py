"""Egress meter and limiter: an aiohttp reverse proxy in front of an OpenAI-compatible server (spec §7).

Per request: validate -> reserve R bytes (committed in SQLite) -> forward, counting every byte written
to the client (status line, headers, chunked framing, body) and never passing R -> settle once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import reprlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from alignlab.exfil.budget import BudgetStore, RequestInfo
from alignlab.exfil.forward import Forward, error_body
from alignlab.exfil.meter import make_comp_meter
from alignlab.exfil.proxy_config import ProxyConfig, is_loopback

log = logging.getLogger("alignlab.exfil.proxy")
API_ROUTES = {"/v1/chat/completions": "POST", "/v1/completions": "POST", "/v1/models": "GET"}


class Rejected(Exception):
    def __init__(self, status: int, message: str, etype: str, code: str | None, headers: dict | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.etype, self.code, self.headers, self.extra = status, etype, code, headers or {}, extra


class Validated(NamedTuple):
    payload: bytes | None
    """The request re-serialised for the upstream (None for GET)."""
    info: RequestInfo
    n: int
    max_tokens: int
    stream: bool


class EgressProxy:
    def __init__(self, cfg: ProxyConfig, store: BudgetStore | None = None) -> None:
        self.cfg = cfg
        self.store = store or BudgetStore(cfg.db, cfg.capacity_bytes, cfg.rate)
        self.db = ThreadPoolExecutor(1, thread_name_prefix="egress-db")
        self.comp = ThreadPoolExecutor(1, thread_name_prefix="egress-comp")
        self.comp_size = make_comp_meter(cfg.comp_model)
        self.session: Any = None
        self.recovered = self.store.recover()

    async def _db(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.db, fn, *args)

    def make_app(self) -> Any:
        from aiohttp import web

        app = web.Application(client_max_size=self.cfg.max_body + 1)
        app.router.add_get("/egress/status", self.handle_status)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, app: Any) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.cfg.upstream_timeout,
                                        sock_read=self.cfg.upstream_timeout)
        self.session = aiohttp.ClientSession(timeout=timeout, auto_decompress=True,
                                             connector=aiohttp.TCPConnector(limit=64))

    async def _cleanup(self, app: Any) -> None:
        await self.session.close()
        await self._db(self.store.close)
        self.db.shutdown(wait=True)
        self.comp.shutdown(wait=True)

    async def handle_status(self, request: Any) -> Any:
        from aiohttp import web

        if not is_loopback(request.remote or ""):
            return web.json_response(json.loads(error_body("status is served to loopback only",
                                                           "permission_error", "forbidden")), status=403)
        status = await self._db(self.store.status)
        status.update(enforce=self.cfg.enforce, comp_model=self.cfg.comp_model, recovered_at_start=self.recovered)
        return web.json_response(status)

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        rid = uuid.uuid4().hex
        info = RequestInfo(rid, client=request.remote or "", path=request.path)
        try:
            try:
                body, info, n, max_tokens, stream = await self._validate(request, info)
            except RecursionError:  # any walk of a deeply nested value (parse, repr, serialise)
                raise _too_deep() from None
        except Rejected as rej:
            await self._db(self.store.log_reject, info, rej.status, rej.code or rej.etype)
            return web.Response(status=rej.status, body=error_body(str(rej), rej.etype, rej.code, **rej.extra),
                                content_type="application/json", headers=rej.headers)
        raw_r = self.cfg.raw_reservation(n, max_tokens, stream) if body is not None else (
            self.cfg.header_allowance + self.cfg.body_allowance * 8)
        comp_r = self.cfg.comp_reservation(n, max_tokens)
        amount = comp_r if self.cfg.enforce == "compressed" else raw_r
        res = await self._db(self.store.reserve, info, amount)
        if not res.ok:
            msg = (f"egress budget exceeded: this request reserves {amount} bytes but {int(res.level)} remain "
                   f"(capacity {int(self.cfg.capacity_bytes)}); lower max_tokens or n"
                   + (f", or retry after {res.retry_after} s" if res.retry_after is not None else ""))
            headers = {"Retry-After": str(res.retry_after)} if res.retry_after is not None else {}
            return web.Response(status=429, content_type="application/json", headers=headers,
                                body=error_body(msg, "egress_budget_exceeded", "egress_budget_exceeded",
                                                reservation=amount, remaining=int(res.level)))
        fwd = Forward(self, request, rid, raw_r, comp_r if self.cfg.enforce == "compressed" else None)
        try:
            resp = await fwd.run(body, stream)
        finally:
            await asyncio.shield(self._settle(fwd))
        return resp

    async def _settle(self, fwd: Forward) -> None:
        text = fwd.collector.text if fwd.stream else fwd.text
        comp = await asyncio.get_running_loop().run_in_executor(self.comp, self.comp_size, text)
        if fwd.note:
            log.warning("%s request %s (reserved %d, sent %d)", fwd.note, fwd.rid, fwd.limit, fwd.sent)
        await self._db(self.store.settle, fwd.rid, fwd.charged_raw(), comp, fwd.status, self.cfg.enforce, fwd.note)

    async def _read_body(self, request: Any) -> bytes:
        """The whole request body, read to EOF (a single ``read(n)`` may return only part of it), or 413."""
        limit = self.cfg.max_body
        if (request.content_length or 0) > limit:
            raise Rejected(413, f"request body of {request.content_length} bytes exceeds the limit of {limit} "
                           "bytes", "invalid_request_error", "request_too_large")
        raw = bytearray()
        while chunk := await request.content.read(65536):
            raw += chunk
            if len(raw) > limit:  # chunked bodies have no Content-Length: stop reading at the limit
                raise Rejected(413, f"request body exceeds the limit of {limit} bytes",
                               "invalid_request_error", "request_too_large")
        return bytes(raw)

    async def _validate(self, request: Any, info: RequestInfo) -> Validated:
        want = API_ROUTES.get(request.path)
        if want is None:
            raise Rejected(404, f"path {request.path} is not proxied; use /v1/chat/completions, /v1/completions "
                           "or /v1/models", "invalid_request_error", "not_found")
        if request.method != want:
            raise Rejected(405, f"method {request.method} not allowed on {request.path}; use {want}",
                           "invalid_request_error", "method_not_allowed")
        if want == "GET":
            return Validated(None, info, 1, 0, False)
        body = _parse_json(await self._read_body(request))
        field = "messages" if request.path.endswith("chat/completions") else "prompt"
        if field not in body:
            raise Rejected(400, f"{field}: required field is missing", "invalid_request_error", "missing_field",
                           param=field)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise Rejected(400, "stream: must be true or false", "invalid_request_error", "invalid_value",
                           param="stream")
        body.setdefault("max_tokens", self.cfg.default_max_tokens)
        self._check_limits(body)
        model = body.get("model", "")
        model = model if isinstance(model, str) else reprlib.repr(model)
        info = RequestInfo(info.request_id, info.client, info.path, model[:200], stream)
        # an upstream may honour either field: reserve for the larger one
        tokens = max(int(body["max_tokens"]), int(body.get("max_completion_tokens", 0)))
        try:
            payload = json.dumps(body).encode()
        except (RecursionError, ValueError):
            raise _too_deep() from None
        return Validated(payload, info, int(body.get("n", 1)), tokens, stream)

    def _check_limits(self, body: dict) -> None:
        limits = (("max_tokens", self.cfg.max_tokens_cap), ("max_completion_tokens", self.cfg.max_tokens_cap),
                  ("n", self.cfg.n_cap))
        for name, cap in limits:
            if name not in body:
                continue
            value = body[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise Rejected(400, f"{name}: must be an integer, got {reprlib.repr(value)}", "invalid_request_error",
                               "invalid_value", param=name)
            if value < 1:
                raise Rejected(400, f"{name}: must be >= 1, got {value}", "invalid_request_error",
                               "invalid_value", param=name)
            if value > cap:
                raise Rejected(400, f"{name}: {value} exceeds the limit of {cap}", "invalid_request_error",
                               "limit_exceeded", param=name)


def _parse_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except RecursionError:  # deeply nested arrays/objects: a client error, not a 500
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError):
        raise Rejected(400, "body: not valid JSON", "invalid_request_error", "invalid_json") from None
    if not isinstance(body, dict):
        raise Rejected(400, "body: must be a JSON object", "invalid_request_error", "invalid_json")
    return body


def _too_deep() -> Rejected:
    return Rejected(400, "body: JSON nested too deeply", "invalid_request_error", "invalid_json")
