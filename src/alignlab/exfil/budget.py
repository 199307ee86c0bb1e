"""Persistent token-bucket egress budget in SQLite (spec §7).

Bytes are reserved and committed before any byte is sent; settlement refunds the unused part once
(``UPDATE … WHERE state = 'reserved'``); rows left ``reserved`` by a dead process are charged in full
at start-up, so a kill -9 never under-charges. WAL, synchronous=FULL, BEGIN IMMEDIATE for every
mutation, busy_timeout 5 s: several proxy processes may share one file.
"""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alignlab.errors import AlignlabError
from alignlab.exfil import audit

SCHEMA = """
CREATE TABLE IF NOT EXISTS bucket (
    id INTEGER PRIMARY KEY CHECK (id = 1), level REAL NOT NULL, updated_at REAL NOT NULL,
    capacity REAL NOT NULL, rate REAL NOT NULL, audit_seq INTEGER, audit_hash TEXT
);
CREATE TABLE IF NOT EXISTS ledger (
    request_id TEXT PRIMARY KEY, state TEXT NOT NULL, reserved INTEGER NOT NULL,
    charged_raw INTEGER, charged_comp INTEGER, charged INTEGER, t0 REAL NOT NULL, t1 REAL,
    owner TEXT NOT NULL, client TEXT, path TEXT, model TEXT, stream INTEGER, status INTEGER, note TEXT
);
CREATE INDEX IF NOT EXISTS ledger_state ON ledger (state);
CREATE TABLE IF NOT EXISTS proxies (instance TEXT PRIMARY KEY, host TEXT, pid INTEGER, started_at REAL);
"""


@dataclass(frozen=True)
class RequestInfo:
    request_id: str
    client: str = ""
    path: str = ""
    model: str = ""
    stream: bool = False


@dataclass(frozen=True)
class Reservation:
    ok: bool
    reserved: int
    level: float
    """Level after the decision (after the debit when ok)."""
    retry_after: int | None
    """Seconds until the bucket holds the reservation (None when r = 0 or it can never fit)."""


def connect(path: str) -> sqlite3.Connection:
    """Open (or create) the budget database; a path that cannot hold one is a one-line error."""
    _check_db_path(Path(path))
    try:
        conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")  # reads the header: "file is not a database" surfaces here
        conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as exc:
        raise AlignlabError(f"db: {path} cannot be opened as an SQLite database ({exc}); pass a new file name or "
                            "the file given to `alignlab exfil proxy --db`") from None
    return conn


def _check_db_path(path: Path) -> None:
    if path.is_dir():
        raise AlignlabError(f"db: {path} is a directory; pass a file path such as {path / 'egress.sqlite'}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise AlignlabError(f"db: {parent} is a regular file, so {path} cannot be created under it; pass a path "
                            "inside a directory")
    if not path.parent.exists():
        raise AlignlabError(f"db: directory {path.parent} does not exist; create it or pass another path")


class _Tx:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


_LIVE_INSTANCES: set[str] = set()
"""Stores open in this process: a same-pid instance not listed here belongs to a dead process (pid reuse)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is dead for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class BudgetStore:
    """The bucket, ledger and audit log of one database file, for one proxy process."""

    def __init__(self, path: str, capacity: float, rate: float = 0.0,
                 clock: Callable[[], float] = time.time) -> None:
        if not (math.isfinite(capacity) and capacity > 0):
            raise AlignlabError(f"capacity: must be a finite number of bytes > 0, got {capacity}")
        if not (math.isfinite(rate) and rate >= 0):
            raise AlignlabError(f"rate: must be a finite number of bytes/s >= 0, got {rate}")
        self.path, self.clock = path, clock
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.conn = connect(path)
        try:
            self._init_tables(capacity, rate)
        except sqlite3.Error as exc:
            self.conn.close()
            raise AlignlabError(f"db: {path} is not an alignlab egress database ({exc}); pass a new file name or "
                                "the file given to `alignlab exfil proxy --db`") from None
        _LIVE_INSTANCES.add(self.instance)

    def _init_tables(self, capacity: float, rate: float) -> None:
        self.conn.executescript(audit.SCHEMA + SCHEMA)
        with _Tx(self.conn) as c:
            audit.migrate(c)
            now = self.clock()
            row = c.execute("SELECT level FROM bucket WHERE id = 1").fetchone()
            if row is None:
                c.execute("INSERT INTO bucket (id, level, updated_at, capacity, rate) VALUES (1, ?, ?, ?, ?)",
                          (float(capacity), now, float(capacity), float(rate)))
            else:  # a new capacity/rate applies from now on; the stored level and updated_at are kept
                c.execute("UPDATE bucket SET capacity = ?, rate = ?, level = MIN(level, ?) WHERE id = 1",
                          (float(capacity), float(rate), float(capacity)))
            c.execute("INSERT INTO proxies VALUES (?, ?, ?, ?)",
                      (self.instance, socket.gethostname(), os.getpid(), now))

    def close(self) -> None:
        with _Tx(self.conn) as c:
            c.execute("DELETE FROM proxies WHERE instance = ?", (self.instance,))
        self.conn.close()
        _LIVE_INSTANCES.discard(self.instance)

    def _refill(self, c: sqlite3.Connection) -> tuple[float, float, float]:
        """Refill by r·max(0, now − updated_at) (backward clock steps add nothing); returns level, cap, rate."""
        level, updated, cap, rate = c.execute(
            "SELECT level, updated_at, capacity, rate FROM bucket WHERE id = 1").fetchone()
        now = self.clock()
        level = min(cap, level + rate * max(0.0, now - updated))
        c.execute("UPDATE bucket SET level = ?, updated_at = ? WHERE id = 1", (level, max(updated, now)))
        return level, cap, rate

    def reserve(self, req: RequestInfo, amount: int) -> Reservation:
        """Debit ``amount`` and insert a ``reserved`` ledger row, or reject; one transaction."""
        with _Tx(self.conn) as c:
            level, cap, rate = self._refill(c)
            common = dict(ts=self.clock(), request_id=req.request_id, client=req.client, path=req.path,
                          model=req.model, stream=req.stream, reserved=amount)
            if level < amount:
                retry = math.ceil((amount - level) / rate) if rate > 0 and amount <= cap else None
                audit.append(c, **common, status=429, level_after=level, decision="reject",
                             note="egress_budget_exceeded")
                return Reservation(False, amount, level, retry)
            level -= amount
            c.execute("UPDATE bucket SET level = ? WHERE id = 1", (level,))
            c.execute("INSERT INTO ledger (request_id, state, reserved, t0, owner, client, path, model, stream) "
                      "VALUES (?, 'reserved', ?, ?, ?, ?, ?, ?, ?)",
                      (req.request_id, amount, common["ts"], self.instance, req.client, req.path, req.model,
                       int(req.stream)))
            audit.append(c, **common, level_after=level, decision="reserve")
            return Reservation(True, amount, level, None)

    def settle(self, request_id: str, charged_raw: int, charged_comp: int | None, status: int,
               enforce: str = "raw", note: str = "") -> bool:
        """Record the charge and refund reserved − charged, once. Returns False if already settled."""
        with _Tx(self.conn) as c:
            row = c.execute("SELECT reserved, client, path, model, stream FROM ledger WHERE request_id = ? "
                            "AND state = 'reserved'", (request_id,)).fetchone()
            if row is None:
                return False
            reserved = row[0]
            charged = charged_comp if enforce == "compressed" and charged_comp is not None else charged_raw
            if charged > reserved:  # a proxy bug let more bytes out than reserved: charge them, flag the row
                note = "reservation_overrun" + (f"; {note}" if note and note != "reservation_overrun" else "")
            now = self.clock()
            cur = c.execute("UPDATE ledger SET state = 'settled', charged_raw = ?, charged_comp = ?, charged = ?, "
                            "t1 = ?, status = ?, note = ? WHERE request_id = ? AND state = 'reserved'",
                            (charged_raw, charged_comp, charged, now, status, note, request_id))
            if cur.rowcount != 1:
                return False
            level, _, _ = self._refill(c)
            level += reserved - charged  # negative only if charged > reserved: never under-charge
            c.execute("UPDATE bucket SET level = ? WHERE id = 1", (level,))
            audit.append(c, ts=now, request_id=request_id, client=row[1], path=row[2], model=row[3],
                         stream=row[4], status=status, reserved=reserved, charged_raw=charged_raw,
                         charged_comp=charged_comp, charged=charged, level_after=level, decision="settle",
                         note=note)
            return True

    def recover(self) -> int:
        """Charge in full (no refund) every ``reserved`` row whose owning process is gone."""
        host = socket.gethostname()
        with _Tx(self.conn) as c:
            dead = []
            for instance, h, pid in c.execute("SELECT instance, host, pid FROM proxies").fetchall():
                if instance in _LIVE_INSTANCES or h != host:
                    continue
                if (pid == os.getpid()) or not _pid_alive(pid):
                    dead.append(instance)
            live = {i for (i,) in c.execute("SELECT instance FROM proxies")} - set(dead)
            rows = [r for r in c.execute("SELECT request_id, reserved, owner, client, path, model, stream FROM "
                                         "ledger WHERE state = 'reserved'").fetchall() if r[2] not in live]
            level, _, _ = self._refill(c)
            for request_id, reserved, _owner, client, path, model, stream in rows:
                c.execute("UPDATE ledger SET state = 'recovered', charged_raw = reserved, charged = reserved, "
                          "t1 = ?, note = 'recovered after crash' WHERE request_id = ? AND state = 'reserved'",
                          (self.clock(), request_id))
                audit.append(c, ts=self.clock(), request_id=request_id, client=client, path=path, model=model,
                             stream=stream, reserved=reserved, charged_raw=reserved, charged=reserved,
                             level_after=level, decision="recover", note="charged in full: owner process gone")
            for instance in dead:
                c.execute("DELETE FROM proxies WHERE instance = ?", (instance,))
            return len(rows)

    def log_reject(self, req: RequestInfo, status: int, note: str) -> None:
        """Audit a request refused before any reservation (400/404/413)."""
        with _Tx(self.conn) as c:
            level = c.execute("SELECT level FROM bucket WHERE id = 1").fetchone()[0]
            audit.append(c, ts=self.clock(), request_id=req.request_id, client=req.client, path=req.path,
                         model=req.model, stream=req.stream, status=status, level_after=level,
                         decision="reject", note=note)

    def status(self) -> dict:
        with _Tx(self.conn) as c:
            level, cap, rate = self._refill(c)
            tot = c.execute(
                "SELECT COUNT(*), COALESCE(SUM(charged_raw), 0), COALESCE(SUM(charged_comp), 0), "
                "COALESCE(SUM(charged), 0) FROM ledger WHERE state IN ('settled', 'recovered')").fetchone()
            outstanding = c.execute("SELECT COUNT(*), COALESCE(SUM(reserved), 0) FROM ledger "
                                    "WHERE state = 'reserved'").fetchone()
            rejected = c.execute("SELECT COUNT(*) FROM audit WHERE decision = 'reject'").fetchone()[0]
            recovered = c.execute("SELECT COUNT(*) FROM ledger WHERE state = 'recovered'").fetchone()[0]
        return {"level": level, "capacity": cap, "rate": rate,
                "totals": {"requests": tot[0], "charged_raw": tot[1], "charged_comp": tot[2], "charged": tot[3],
                           "reserved_outstanding": outstanding[1], "in_flight": outstanding[0],
                           "rejected": rejected, "recovered": recovered}}
