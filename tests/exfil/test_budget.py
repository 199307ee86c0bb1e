"""SQLite token bucket: reserve/settle/idempotence, refill and clock steps, crash recovery, audit chain."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from alignlab.cli import main
from alignlab.errors import AlignlabError
from alignlab.exfil import audit
from alignlab.exfil.budget import BudgetStore, RequestInfo


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def req(i: int | str) -> RequestInfo:
    return RequestInfo(f"r{i}", client="127.0.0.1", path="/v1/completions", model="m", stream=False)


def test_reserve_settle_refund_and_idempotence(tmp_path):
    store = BudgetStore(str(tmp_path / "b.db"), capacity=1000)
    assert store.reserve(req(1), 600).ok
    assert store.status()["level"] == 400
    rej = store.reserve(req(2), 500)
    assert not rej.ok and rej.level == 400 and rej.retry_after is None  # r = 0: no Retry-After
    assert store.settle("r1", 250, 40, 200)
    assert store.status()["level"] == 750
    # settling again (or settling an unknown id) changes nothing
    before = store.status()
    assert not store.settle("r1", 0, 0, 200)
    assert not store.settle("r1", 600, 600, 200)
    assert not store.settle("nope", 1, 1, 200)
    assert store.status() == before
    row = store.conn.execute("SELECT state, reserved, charged_raw, charged_comp, charged FROM ledger").fetchone()
    assert row == ("settled", 600, 250, 40, 250)
    assert store.status()["level"] + row[4] == 1000


def test_compressed_enforcement_charges_comp(tmp_path):
    store = BudgetStore(str(tmp_path / "b.db"), capacity=1000)
    assert store.reserve(req(1), 300).ok
    assert store.settle("r1", 900, 120, 200, enforce="compressed")
    assert store.status()["level"] == 880
    assert store.status()["totals"]["charged_raw"] == 900


def test_refill_retry_after_and_backward_clock(tmp_path):
    clock = Clock()
    store = BudgetStore(str(tmp_path / "b.db"), capacity=1000, rate=10.0, clock=clock)
    assert store.reserve(req(1), 900).ok
    res = store.reserve(req(2), 500)  # 100 left, needs 400 more at 10 B/s
    assert not res.ok and res.retry_after == 40
    clock.t -= 500  # a backward clock step adds nothing and does not move updated_at back
    assert store.status()["level"] == pytest.approx(100)
    clock.t += 500 + 39
    assert not store.reserve(req(3), 500).ok
    clock.t += 1
    assert store.reserve(req(4), 500).ok
    clock.t += 10_000
    assert store.status()["level"] == 1000  # capped at capacity
    never = store.reserve(req(5), 5000)
    assert not never.ok and never.retry_after is None  # larger than the bucket: never fits


def test_restart_keeps_level_totals_and_refill_origin(tmp_path):
    clock = Clock()
    path = str(tmp_path / "b.db")
    store = BudgetStore(path, capacity=10_000, rate=2.0, clock=clock)
    store.reserve(req(1), 4000)
    store.settle("r1", 3000, 10, 200)
    before = store.status()
    store.close()
    clock.t += 100  # down for 100 s: refill resumes from the stored updated_at
    again = BudgetStore(path, capacity=10_000, rate=2.0, clock=clock)
    after = again.status()
    assert after["totals"] == before["totals"]
    assert after["level"] == pytest.approx(before["level"] + 200)
    assert audit.verify(again.conn).ok


def test_recovery_charges_dead_process_reservations_in_full(tmp_path):
    path = str(tmp_path / "b.db")
    code = (
        "import os; from alignlab.exfil.budget import BudgetStore, RequestInfo\n"
        f"s = BudgetStore({path!r}, capacity=10000)\n"
        "assert s.reserve(RequestInfo('dead1'), 700).ok and s.reserve(RequestInfo('dead2'), 300).ok\n"
        "s.reserve(RequestInfo('done'), 100); s.settle('done', 60, 5, 200)\n"
        "os._exit(0)\n"  # no close(): like a crash
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    live = BudgetStore(path, capacity=10000)
    assert live.reserve(req("mine"), 50).ok  # a live reservation of this process is not touched
    assert live.recover() == 2
    assert live.recover() == 0  # idempotent
    st = live.status()
    assert st["level"] == 10000 - 700 - 300 - 60 - 50
    rows = dict(live.conn.execute("SELECT request_id, state FROM ledger").fetchall())
    assert rows == {"dead1": "recovered", "dead2": "recovered", "done": "settled", "rmine": "reserved"}
    res = audit.verify(live.conn)
    assert res.ok and res.decisions["recover"] == 2


def test_audit_chain_detects_edits_and_deletions(tmp_path, capsys):
    path = str(tmp_path / "b.db")
    store = BudgetStore(path, capacity=1000)
    for i in range(5):
        store.reserve(req(i), 100)
        store.settle(f"r{i}", 50, 5, 200)
    store.close()
    assert main(["exfil", "audit", "verify", "--db", path]) == 0
    assert "audit chain OK" in capsys.readouterr().out
    assert main(["exfil", "audit", "export", "--db", path, "--jsonl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and '"decision": "reserve"' in lines[0]
    conn = sqlite3.connect(path)
    conn.execute("UPDATE audit SET charged_raw = 1 WHERE seq = 4")
    conn.commit()
    res = audit.verify(conn)
    assert not res.ok and "seq 4" in res.problem
    assert main(["exfil", "audit", "verify", "--db", path]) == 1
    capsys.readouterr()
    conn.execute("UPDATE audit SET charged_raw = 50 WHERE seq = 4")
    conn.execute("DELETE FROM audit WHERE seq = 10")
    conn.commit()
    res = audit.verify(conn)
    assert not res.ok and "rows deleted" in res.problem


def test_store_validation(tmp_path):
    with pytest.raises(AlignlabError, match="capacity"):
        BudgetStore(str(tmp_path / "x.db"), capacity=0)
    with pytest.raises(AlignlabError, match="rate"):
        BudgetStore(str(tmp_path / "x.db"), capacity=10, rate=-1)
