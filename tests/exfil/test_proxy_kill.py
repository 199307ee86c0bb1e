"""kill -9 of a proxy process during streaming load, then restart: never under-charged, DB and chain intact."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading

from alignlab.exfil.audit import verify
from alignlab.exfil.server import AppThread
from alignlab.exfil.stub import StubBehaviour, make_stub_app

from .proxy_helpers import araw_request, chat, raw_request


def start_proxy(upstream: str, db: str) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "alignlab.cli", "exfil", "proxy", "--upstream", upstream, "--db", db,
           "--capacity", "2MB", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    try:
        line = lines.get(timeout=60)
    except queue.Empty:
        proc.kill()
        raise AssertionError("proxy did not start: " + proc.stderr.read()) from None
    assert "listening on http://127.0.0.1:" in line, line
    return proc, int(line.rsplit(":", 1)[1])


def test_kill_9_during_streaming_then_restart(tmp_path):
    db = str(tmp_path / "egress.db")
    with AppThread(lambda: make_stub_app(StubBehaviour(delay=0.02))) as stub:
        proc, port = start_proxy(stub.url, db)

        async def load_then_kill() -> list[tuple[int, bytes]]:
            tasks = [asyncio.create_task(araw_request(port, chat(40, stream=True), timeout=30)) for _ in range(24)]
            await asyncio.sleep(0.5)  # streams are mid-flight
            os.kill(proc.pid, signal.SIGKILL)
            return await asyncio.gather(*tasks)

        try:
            results = asyncio.run(asyncio.wait_for(load_then_kill(), 60))
        finally:
            proc.kill()
            proc.wait(30)
        received = sum(n for n, _ in results)
        assert received > 0
        assert any(b"data: [DONE]" not in data for _, data in results)  # some streams were cut by the kill

        proc2, port2 = start_proxy(stub.url, db)
        try:
            status = raw_request(port2, "GET", "/egress/status").json()
            assert status["recovered_at_start"] >= 1
            assert status["capacity"] - status["level"] >= received
            assert status["totals"]["in_flight"] == 0
            ok = raw_request(port2, "POST", "/v1/chat/completions", chat(4, stream=True))  # still serving
            assert ok.status == 200 and b"[DONE]" in ok.body
        finally:
            proc2.send_signal(signal.SIGTERM)
            proc2.wait(30)
    assert proc2.returncode == 0
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    res = verify(conn)
    assert res.ok and res.decisions.get("recover", 0) == status["recovered_at_start"]
    assert conn.execute("SELECT COUNT(*) FROM ledger WHERE state = 'reserved'").fetchone()[0] == 0
    spent = conn.execute("SELECT SUM(charged) FROM ledger").fetchone()[0]
    level = conn.execute("SELECT level FROM bucket").fetchone()[0]
    assert level + spent == 2e6
