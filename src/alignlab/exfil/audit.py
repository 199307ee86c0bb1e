"""Hash-chained audit log of every budget decision (spec §7), stored in the budget database.

Each row's ``hash`` is SHA-256 over its canonical JSON (all fields, ``prev_hash`` included) and
``prev_hash`` is the previous row's hash (64 zeros for the first row). The bucket row keeps the chain
head (last seq and hash), written in the same transaction, so deleting tail rows is detected too.

A linked chain is not enough: ``verify`` also checks the budget arithmetic the rows record. A request
charged more than it reserved (bytes left that the budget did not hold), a negative bucket level, a
settlement without its reservation, or a ledger row that disagrees with its audit row is an overrun or a
forgery, and fails verification even when every hash recomputes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass

GENESIS = "0" * 64
FIELDS = ("seq", "ts", "request_id", "client", "path", "model", "stream", "status", "reserved", "charged_raw",
          "charged_comp", "level_after", "decision", "note", "prev_hash")
"""Hashed fields of every row (in this order)."""
CHARGED = "charged"
"""What the budget was debited (raw or compressed bytes, by the enforcement unit). Settle/recover rows only;
hashed after FIELDS when present, so rows written before it existed still verify."""
LEVEL_EPS = 1e-6

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, ts REAL NOT NULL, request_id TEXT, client TEXT, path TEXT, model TEXT,
    stream INTEGER, status INTEGER, reserved INTEGER, charged_raw INTEGER, charged_comp INTEGER,
    level_after REAL, decision TEXT NOT NULL, note TEXT, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
    charged INTEGER
);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Add the ``charged`` column to an audit table created before it existed."""
    if CHARGED not in _columns(conn):
        conn.execute(f"ALTER TABLE audit ADD COLUMN {CHARGED} INTEGER")


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {r[1] for r in conn.execute("PRAGMA table_info(audit)")}


def row_hash(row: dict) -> str:
    values = [row.get(k) for k in FIELDS]
    if row.get(CHARGED) is not None:
        values.append(row[CHARGED])
    payload = json.dumps(values, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def append(conn: sqlite3.Connection, **fields: object) -> dict:
    """Append one row inside the caller's open transaction; returns the row with seq and hash."""
    head = conn.execute("SELECT audit_seq, audit_hash FROM bucket WHERE id = 1").fetchone()
    seq, prev = (head[0] or 0) + 1, head[1] or GENESIS
    row = {k: fields.get(k) for k in (*FIELDS, CHARGED)}
    row.update(seq=seq, prev_hash=prev)
    if isinstance(row["stream"], bool):
        row["stream"] = int(row["stream"])
    row["hash"] = row_hash(row)
    cols = ", ".join(row)
    conn.execute(f"INSERT INTO audit ({cols}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    conn.execute("UPDATE bucket SET audit_seq = ?, audit_hash = ? WHERE id = 1", (seq, row["hash"]))
    return row


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows: int
    problem: str | None
    decisions: dict[str, int]


def _rows(conn: sqlite3.Connection):
    charged = CHARGED if CHARGED in _columns(conn) else f"NULL AS {CHARGED}"
    cur = conn.execute(f"SELECT {', '.join(FIELDS)}, {charged}, hash FROM audit ORDER BY seq")
    names = (*FIELDS, CHARGED, "hash")
    for values in cur:
        yield dict(zip(names, values))


def _budget_problem(row: dict, reserved_by_id: dict[str, int]) -> str | None:
    """An overrun or an impossible budget step recorded in one (hash-valid) row, or None."""
    seq, rid, decision = row["seq"], row["request_id"], row["decision"]
    if row["level_after"] is not None and row["level_after"] < -LEVEL_EPS:
        return f"seq {seq}: bucket level {row['level_after']:.0f} is negative (overrun)"
    if decision == "reserve":
        reserved_by_id[rid] = row["reserved"]
    elif decision in ("settle", "recover"):
        if reserved_by_id.pop(rid, None) != row["reserved"]:
            return f"seq {seq}: {decision} of request {rid} has no matching reservation of {row['reserved']} bytes"
        if row[CHARGED] is not None and row[CHARGED] > row["reserved"]:
            return (f"seq {seq}: overrun: request {rid} was charged {row[CHARGED]} bytes against a reservation "
                    f"of {row['reserved']}")
    return None


def verify(conn: sqlite3.Connection) -> VerifyResult:
    """Walk the chain (contiguous seq from 1, prev_hash links, hashes recompute, head matches), then check the
    budget it records: no overrun, no negative level, every settlement matches its reservation and the ledger."""
    prev, expected_seq, counts = GENESIS, 1, {}
    reserved_by_id: dict[str, int] = {}
    charged_by_id: dict[str, tuple] = {}
    budget_problem = None
    for row in _rows(conn):
        if row["seq"] != expected_seq:
            return VerifyResult(False, expected_seq - 1, f"seq {expected_seq} missing (found {row['seq']})", counts)
        if row["prev_hash"] != prev:
            return VerifyResult(False, expected_seq - 1, f"seq {row['seq']}: prev_hash does not link", counts)
        if row_hash(row) != row["hash"]:
            return VerifyResult(False, expected_seq - 1, f"seq {row['seq']}: hash mismatch (row edited)", counts)
        counts[row["decision"]] = counts.get(row["decision"], 0) + 1
        prev, expected_seq = row["hash"], expected_seq + 1
        budget_problem = budget_problem or _budget_problem(row, reserved_by_id)
        if row["decision"] in ("settle", "recover"):
            charged_by_id[row["request_id"]] = (row["reserved"], row["charged_raw"], row[CHARGED])
    head = conn.execute("SELECT audit_seq, audit_hash, level FROM bucket WHERE id = 1").fetchone()
    n = expected_seq - 1
    if head is not None and ((head[0] or 0) != n or (head[1] or GENESIS) != prev):
        return VerifyResult(False, n, f"chain head says seq {head[0]}, table ends at {n} (rows deleted)", counts)
    problem = budget_problem or _ledger_problem(conn, charged_by_id, set(reserved_by_id))
    if problem is None and head is not None and head[2] < -LEVEL_EPS:
        problem = f"bucket level {head[2]:.0f} is negative (overrun)"
    return VerifyResult(problem is None, n, problem, counts)


def _ledger_problem(conn: sqlite3.Connection, charged_by_id: dict[str, tuple], open_ids: set[str]) -> str | None:
    """The ledger must agree with the audit log: same charges, nothing charged beyond its reservation."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger'").fetchone() is None:
        return None
    unseen = set(charged_by_id)
    for rid, state, reserved, charged_raw, charged in conn.execute(
            "SELECT request_id, state, reserved, charged_raw, charged FROM ledger"):
        unseen.discard(rid)
        if charged is not None and charged > reserved:
            return f"ledger: overrun: request {rid} charged {charged} bytes against a reservation of {reserved}"
        if state == "reserved":
            if rid not in open_ids:
                return f"ledger: request {rid} is reserved but the audit log has no open reservation for it"
            continue
        audited = charged_by_id.get(rid)
        if audited is None:
            return f"ledger: request {rid} is {state} but the audit log has no settlement for it"
        if audited[0] != reserved or audited[1] != charged_raw or audited[2] not in (None, charged):
            return (f"ledger: request {rid} disagrees with the audit log (ledger reserved {reserved}, charged_raw "
                    f"{charged_raw}; audit {audited[0]}, {audited[1]})")
    if unseen:
        return f"ledger: {len(unseen)} settled request(s) of the audit log are missing, e.g. {min(unseen)}"
    return None


def export_rows(conn: sqlite3.Connection) -> list[dict]:
    return list(_rows(conn))
