"""A hostile upstream cannot push bytes past the egress budget, and `audit verify` catches any overrun."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from alignlab.cli import main
from alignlab.exfil import audit
from alignlab.exfil.budget import BudgetStore, RequestInfo
from alignlab.exfil.forward import CONTENT_TYPES, SERVER, forwarded_status
from alignlab.exfil.proxy_config import HEADER_MAX, ProxyConfig
from alignlab.exfil.server import AppThread

from .proxy_helpers import ProxyThread, araw_request, chat, parse, raw_request

CAP = 50_000
HUGE_TYPE = "application/json; x=" + "a" * 8000  # the header that carried 117,790 bytes past a 50 kB cap


def hostile_app(status: int = 200, content_type: str = HUGE_TYPE):
    """An OpenAI-shaped upstream that pads every response with 8 kB+ of headers (streamed or not)."""
    from aiohttp import web

    padding = {"X-Leak-1": "b" * 4000, "X-Leak-2": "c" * 4000, "Set-Cookie": "k=" + "d" * 4000}

    async def complete(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("stream") and status == 200:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; x=" + "e" * 8000, **padding})
            await resp.prepare(request)
            for i in range(body["max_tokens"]):
                chunk = {"choices": [{"index": 0, "delta": {"content": f" w{i}"}}]}
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            return resp
        out = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}
        headers = {"Content-Type": content_type, "Location": "http://192.0.2.1/" + "f" * 4000, **padding}
        return web.Response(status=status, body=json.dumps(out).encode(), headers=headers)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", complete)
    return app


def run_load(port: int, bodies: list[dict]) -> list[tuple[int, bytes]]:
    async def load():
        return await asyncio.gather(*[araw_request(port, b) for b in bodies])

    return asyncio.run(asyncio.wait_for(load(), 60))


@pytest.mark.parametrize("stream", [False, True])
def test_oversized_upstream_headers_never_pass_the_budget(tmp_path, stream):
    db = tmp_path / "egress.db"
    with AppThread(hostile_app) as up:
        p = ProxyThread(ProxyConfig(upstream=up.url, db=str(db), capacity=str(CAP)))
        try:
            # 10 concurrent requests whose reservations (4,608 B non-streamed, 4,112 + 16·496 streamed) all
            # fit the cap at once or nearly, so each 8 kB header would have been sent
            results = run_load(p.port, [chat(16 if not stream else 4, stream=stream) for _ in range(10)])
            p.ledger()
        finally:
            p.stop()
    responses = [parse(data) for _, data in results]
    total = sum(n for n, _ in results)
    assert total <= CAP  # every byte on the wire, headers included (the old proxy sent ~84 kB here)
    ok = [r for r in responses if r.status == 200]
    assert len(ok) >= 8 and {r.status for r in responses} <= {200, 429}
    for r in ok:
        assert r.headers["content-type"] == ("text/event-stream" if stream else "application/json")
        assert not {"x-leak-1", "x-leak-2", "set-cookie", "location"} & set(r.headers)
        assert r.headers["server"] == SERVER and r.nbytes - len(r.body) < HEADER_MAX
    conn = sqlite3.connect(db)
    ledger = dict(conn.execute("SELECT request_id, charged_raw FROM ledger").fetchall())
    assert all(ledger[r.request_id] == r.nbytes for r in ok)  # charged == bytes the client received
    level = conn.execute("SELECT level FROM bucket").fetchone()[0]
    assert level >= 0 and level + sum(ledger.values()) == CAP
    assert conn.execute("SELECT COUNT(*) FROM ledger WHERE charged > reserved").fetchone()[0] == 0
    assert audit.verify(conn).ok


@pytest.mark.parametrize("status,expect", [(418, 418), (500, 500), (204, 502), (302, 502), (101, 502)])
def test_upstream_status_and_content_type_are_normalised(tmp_path, status, expect):
    with AppThread(lambda: hostile_app(status, "text/html; charset=" + "x" * 5000)) as up:
        p = ProxyThread(ProxyConfig(upstream=up.url, db=str(tmp_path / "s.db"), capacity="1MB"))
        try:
            r = raw_request(p.port, "POST", "/v1/chat/completions", chat(4))
            (row,) = p.ledger(r.request_id)
        finally:
            p.stop()
    assert r.status == expect and row[3] == r.nbytes <= row[2]
    assert r.headers["content-type"] == ("application/octet-stream" if expect < 502 else "application/json")
    assert "location" not in r.headers


def test_header_block_bound_holds_for_every_status_and_type():
    """The fixed header block (longest reason phrase, longest Content-Type, 20-digit length) fits HEADER_MAX."""
    from http import HTTPStatus

    for st in HTTPStatus:
        if not forwarded_status(st.value):
            continue
        for ctype in [*CONTENT_TYPES.values(), "application/octet-stream"]:
            head = (f"HTTP/1.1 {st.value} {st.phrase}\r\nContent-Type: {ctype}\r\nServer: {SERVER}\r\n"
                    f"X-Egress-Request-Id: {'0' * 32}\r\nContent-Length: {'9' * 20}\r\nCache-Control: no-cache\r\n"
                    f"Transfer-Encoding: chunked\r\nDate: Mon, 07 Dec 2026 01:30:16 GMT\r\nConnection: keep-alive\r\n\r\n")
            assert len(head.encode()) <= HEADER_MAX
    assert ProxyConfig().header_allowance >= HEADER_MAX
    with pytest.raises(Exception, match="header-allowance"):
        ProxyConfig(header_allowance=100)


def _store_with_traffic(path: str) -> BudgetStore:
    store = BudgetStore(path, capacity=10_000)
    for i in range(3):
        assert store.reserve(RequestInfo(f"r{i}"), 1000).ok
        assert store.settle(f"r{i}", 600, 50, 200)
    return store


def test_audit_verify_flags_a_forced_overrun(tmp_path, capsys):
    path = str(tmp_path / "b.db")
    store = _store_with_traffic(path)
    assert audit.verify(store.conn).ok
    # a proxy bug lets 1,500 bytes out against a 1,000-byte reservation: charged in full, and flagged
    assert store.reserve(RequestInfo("bad"), 1000).ok
    assert store.settle("bad", 1500, 50, 200)
    note = store.conn.execute("SELECT note FROM ledger WHERE request_id = 'bad'").fetchone()[0]
    assert note.startswith("reservation_overrun")
    assert store.status()["level"] == 10_000 - 3 * 600 - 1500
    res = audit.verify(store.conn)
    assert not res.ok and "overrun" in res.problem and "charged 1500" in res.problem and "1000" in res.problem
    store.close()
    assert main(["exfil", "audit", "verify", "--db", path]) == 1
    assert "overrun" in capsys.readouterr().err


def test_audit_verify_flags_forged_rows_with_a_valid_chain(tmp_path):
    """Rows rewritten *with* recomputed hashes (an attacker holding the file) still fail on the arithmetic."""
    path = str(tmp_path / "b.db")
    _store_with_traffic(path).close()
    conn = sqlite3.connect(path)

    def rechain():
        prev = audit.GENESIS
        for row in audit.export_rows(conn):
            row["prev_hash"] = prev
            prev = audit.row_hash(row)
            conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (row["prev_hash"], prev, row["seq"]))
        conn.execute("UPDATE bucket SET audit_hash = ?", (prev,))
        conn.commit()

    conn.execute("UPDATE audit SET charged_raw = 4000, charged = 4000 WHERE seq = 2")  # more than reserved
    rechain()
    res = audit.verify(conn)
    assert not res.ok and "seq 2: overrun" in res.problem
    conn.execute("UPDATE audit SET charged_raw = 600, charged = 600, level_after = -10 WHERE seq = 2")
    rechain()
    assert "negative" in audit.verify(conn).problem
    conn.execute("UPDATE audit SET level_after = 8400, reserved = 5000 WHERE seq = 2")  # settle without its reserve
    rechain()
    assert "no matching reservation" in audit.verify(conn).problem
    conn.execute("UPDATE audit SET reserved = 1000 WHERE seq = 2")
    rechain()
    assert audit.verify(conn).ok  # back to the honest history
    conn.execute("UPDATE ledger SET charged_raw = 4000, charged = 4000 WHERE request_id = 'r1'")
    conn.commit()
    assert "ledger: overrun: request r1" in audit.verify(conn).problem
    conn.execute("UPDATE ledger SET charged_raw = 700, charged = 700 WHERE request_id = 'r1'")
    conn.commit()
    assert "disagrees" in audit.verify(conn).problem
    conn.execute("UPDATE ledger SET charged_raw = 600, charged = 600 WHERE request_id = 'r1'")
    conn.execute("UPDATE bucket SET level = -5")
    conn.commit()
    assert "bucket level -5 is negative" in audit.verify(conn).problem


def test_audit_rows_written_before_the_charged_column_still_verify(tmp_path):
    path = str(tmp_path / "old.db")
    _store_with_traffic(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE audit SET charged = NULL")  # as the old code wrote them: hash without `charged`
    prev = audit.GENESIS
    for row in audit.export_rows(conn):
        row["prev_hash"] = prev
        prev = audit.row_hash(row)
        conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (row["prev_hash"], prev, row["seq"]))
    conn.execute("UPDATE bucket SET audit_hash = ?", (prev,))
    conn.commit()
    assert audit.verify(conn).ok
    conn.execute("UPDATE audit SET charged = 600 WHERE seq = 2")  # adding a value later breaks the hash
    conn.commit()
    assert "hash mismatch" in audit.verify(conn).problem
    conn.execute("UPDATE audit SET charged = NULL WHERE seq = 2")
    conn.execute("ALTER TABLE audit DROP COLUMN charged")  # a database from before the column existed
    conn.commit()
    assert audit.verify(conn).ok
    store = BudgetStore(path, capacity=10_000)  # opening it migrates the table; new rows carry `charged`
    assert store.reserve(RequestInfo("new"), 100).ok and store.settle("new", 80, 5, 200)
    assert audit.verify(store.conn).ok and audit.export_rows(store.conn)[-1]["charged"] == 80
    store.close()
