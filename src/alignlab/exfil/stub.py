"""A stub OpenAI-compatible server for tests and demos (loopback only, no model).

It "generates" ``max_tokens`` word tokens (``w0 w1 …``) per choice; streamed responses send one SSE
chunk per token in the OpenAI format, then a finish chunk and ``data: [DONE]``. Knobs simulate a
misbehaving upstream: ``ignore_max_tokens`` (10× longer output), ``delay`` (seconds per chunk) and
``hang`` (never answer).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class StubBehaviour:
    ignore_max_tokens: bool = False
    delay: float = 0.0
    hang: bool = False
    unicode: bool = False
    """Emit tokens with non-ASCII text and quotes (exercises JSON escaping)."""


def _tokens(n: int, unicode: bool) -> list[str]:
    if unicode:
        return [(f" ü{i}\"😀" if i % 3 == 0 else f" w{i}") for i in range(n)]
    return [f" w{i}" for i in range(n)]


def make_stub_app(behaviour: StubBehaviour | None = None) -> Any:
    from aiohttp import web

    b = behaviour or StubBehaviour()

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stub-model", "object": "model",
                                                              "created": 0, "owned_by": "alignlab"}]})

    async def complete(request: web.Request) -> web.StreamResponse:
        if b.hang:
            await asyncio.sleep(30)  # longer than any test's upstream timeout
        body = await request.json()
        chat = request.path.endswith("chat/completions")
        n_tok = int(body.get("max_tokens", 16)) * (10 if b.ignore_max_tokens else 1)
        n = int(body.get("n", 1))
        toks = _tokens(n_tok, b.unicode)
        base = {"id": "cmpl-stub", "created": int(time.time()), "model": body.get("model", "stub-model")}
        if not body.get("stream"):
            text = "".join(toks)
            choices = [({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                        if chat else {"index": i, "text": text, "finish_reason": "length"}) for i in range(n)]
            usage = {"prompt_tokens": 5, "completion_tokens": n * n_tok, "total_tokens": 5 + n * n_tok}
            return web.json_response({**base, "object": "chat.completion" if chat else "text_completion",
                                      "choices": choices, "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        obj = "chat.completion.chunk" if chat else "text_completion"
        for i in range(n):
            for tok in toks:
                ch = ({"index": i, "delta": {"content": tok}, "finish_reason": None} if chat
                      else {"index": i, "text": tok, "finish_reason": None})
                await resp.write(b"data: " + json.dumps({**base, "object": obj, "choices": [ch]}).encode() + b"\n\n")
                if b.delay:
                    await asyncio.sleep(b.delay)
        end = {"index": 0, "delta": {}, "finish_reason": "length"} if chat else {"index": 0, "text": "",
                                                                                 "finish_reason": "length"}
        await resp.write(b"data: " + json.dumps({**base, "object": obj, "choices": [end]}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", complete)
    app.router.add_post("/v1/completions", complete)
    return app
