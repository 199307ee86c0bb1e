"""Request bodies: read whole up to --max-body, 413 above it (chunked too), 400 + audit row for deep nesting."""

from __future__ import annotations

import json
import socket
import sqlite3

import pytest

from alignlab.exfil import audit
from alignlab.exfil.proxy_config import ProxyConfig
from alignlab.exfil.server import AppThread
from alignlab.exfil.stub import make_stub_app

from .proxy_helpers import ProxyThread, chat, parse, raw_request


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    db = tmp_path_factory.mktemp("bodies") / "egress.db"
    with AppThread(make_stub_app) as stub:
        p = ProxyThread(ProxyConfig(upstream=stub.url, db=str(db), capacity="100MB"))
        yield p
        p.stop()


def body_of_size(size: int) -> bytes:
    """A valid chat request of exactly ``size`` bytes (the user message is padding)."""
    base = chat(4)
    base["messages"][0]["content"] = ""
    empty = len(json.dumps(base).encode())
    base["messages"][0]["content"] = "a" * (size - empty)
    data = json.dumps(base).encode()
    assert len(data) == size
    return data


def audit_rows(p: ProxyThread, request_id: str | None = None) -> list[dict]:
    conn = sqlite3.connect(p.proxy.cfg.db)
    try:
        return [r for r in audit.export_rows(conn) if request_id is None or r["request_id"] == request_id]
    finally:
        conn.close()


def test_large_valid_body_under_the_limit_is_read_whole(proxy):
    data = body_of_size(1_000_064)  # under 1 MiB = 1,048,576; one read() used to return only part of it
    for _ in range(3):
        r = raw_request(proxy.port, "POST", "/v1/chat/completions", raw_body=data)
        assert r.status == 200, r.body[:200]
        assert r.json()["choices"][0]["message"]["content"] == " w0 w1 w2 w3"
    limit = proxy.proxy.cfg.max_body
    assert raw_request(proxy.port, "POST", "/v1/chat/completions", raw_body=body_of_size(limit)).status == 200
    over = raw_request(proxy.port, "POST", "/v1/chat/completions", raw_body=body_of_size(limit + 1))
    assert over.status == 413 and str(limit) in over.json()["error"]["message"]


def test_large_body_through_the_openai_client(proxy):
    from openai import OpenAI

    client = OpenAI(base_url=proxy.url + "/v1", api_key="test-key", max_retries=0, timeout=60)
    for size in (300_000, 1_000_000):
        out = client.chat.completions.create(model="stub-model", max_tokens=3,
                                             messages=[{"role": "user", "content": "x" * size}])
        assert out.choices[0].message.content == " w0 w1 w2"


def send_chunked(port: int, data: bytes, chunk: int = 65536) -> bytes:
    """POST ``data`` with Transfer-Encoding: chunked (no Content-Length); returns the raw response."""
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        try:
            s.sendall(head)
            for i in range(0, len(data), chunk):
                part = data[i:i + chunk]
                s.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy may answer 413 and close before the whole body is sent
        received = bytearray()
        while c := s.recv(65536):
            received += c
    return bytes(received)


def test_chunked_bodies_over_the_limit_get_413_and_an_audit_row(proxy):
    r = parse(send_chunked(proxy.port, body_of_size(2_000_000)))
    assert r.status == 413, r.body[:200]
    err = r.json()["error"]
    assert err["code"] == "request_too_large" and "1048576" in err["message"]
    assert audit_rows(proxy)[-1]["status"] == 413 and audit_rows(proxy)[-1]["note"] == "request_too_large"
    ok = parse(send_chunked(proxy.port, body_of_size(900_000), chunk=7_777))  # under the limit, odd chunks
    assert ok.status == 200


@pytest.mark.parametrize("depth", [100_000, 5_000, 990])
def test_deeply_nested_json_is_a_logged_400_not_a_500(proxy, depth):
    data = b'{"messages": ' + b"[" * depth + b"]" * depth + b', "max_tokens": 2}'
    r = raw_request(proxy.port, "POST", "/v1/chat/completions", raw_body=data)
    if depth >= 5_000:
        assert r.status == 400
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and "nested too deeply" in err["message"]
        reject = audit_rows(proxy)[-1]
        assert reject["decision"] == "reject" and reject["status"] == 400 and reject["note"] == "invalid_json"
    else:  # shallow enough to parse: forwarded (or refused as too deep), never a 500
        assert r.status in (200, 400)
    conn = sqlite3.connect(proxy.proxy.cfg.db)
    assert audit.verify(conn).ok
    conn.close()


@pytest.mark.parametrize("value", [b'"' + b"x" * 500_000 + b'"', b"[" * 900 + b"]" * 900])
def test_bad_values_are_echoed_briefly(proxy, value):
    """A huge or nested max_tokens is named in a short 400, not echoed whole (nor walked into a RecursionError)."""
    r = raw_request(proxy.port, "POST", "/v1/chat/completions", raw_body=b'{"messages": [], "max_tokens": ' + value
                    + b"}")
    assert r.status == 400 and len(r.body) < 400, r.body[:200]
    assert r.json()["error"]["message"].startswith("max_tokens: must be an integer")
    assert audit_rows(proxy)[-1]["status"] == 400
