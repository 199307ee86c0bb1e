"""Hash-chained audit log of every budget decision (spec §7), stored in the budget database.

Each row's ``hash`` is SHA-256 over its canonical JSON (all fields, ``prev_hash`` included) and
``prev_hash`` is the previous row's hash (64 zeros for the first row). The bucket row keeps the chain
head (last seq and hash), written in the same transaction, so deleting tail rows is detected too.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass

GENESIS = "0" * 64
FIELDS = ("seq", "ts", "request_id", "client", "path", "model", "stream", "status", "reserved", "charged_raw",
          "charged_comp", "level_after", "decision", "note", "prev_hash")

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, ts REAL NOT NULL, request_id TEXT, client TEXT, path TEXT, model TEXT,
    stream INTEGER, status INTEGER, reserved INTEGER, charged_raw INTEGER, charged_comp INTEGER,
    level_after REAL, decision TEXT NOT NULL, note TEXT, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
"""


def row_hash(row: dict) -> str:
    payload = json.dumps([row.get(k) for k in FIELDS], separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def append(conn: sqlite3.Connection, **fields: object) -> dict:
    """Append one row inside the caller's open transaction; returns the row with seq and hash."""
    head = conn.execute("SELECT audit_seq, audit_hash FROM bucket WHERE id = 1").fetchone()
    seq, prev = (head[0] or 0) + 1, head[1] or GENESIS
    row = {k: fields.get(k) for k in FIELDS}
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


def verify(conn: sqlite3.Connection) -> VerifyResult:
    """Walk the chain: contiguous seq from 1, each prev_hash links, each hash recomputes, head matches."""
    prev, expected_seq, counts = GENESIS, 1, {}
    cur = conn.execute(f"SELECT {', '.join(FIELDS)}, hash FROM audit ORDER BY seq")
    for values in cur:
        row = dict(zip((*FIELDS, "hash"), values))
        if row["seq"] != expected_seq:
            return VerifyResult(False, expected_seq - 1, f"seq {expected_seq} missing (found {row['seq']})", counts)
        if row["prev_hash"] != prev:
            return VerifyResult(False, expected_seq - 1, f"seq {row['seq']}: prev_hash does not link", counts)
        if row_hash(row) != row["hash"]:
            return VerifyResult(False, expected_seq - 1, f"seq {row['seq']}: hash mismatch (row edited)", counts)
        counts[row["decision"]] = counts.get(row["decision"], 0) + 1
        prev, expected_seq = row["hash"], expected_seq + 1
    head = conn.execute("SELECT audit_seq, audit_hash FROM bucket WHERE id = 1").fetchone()
    n = expected_seq - 1
    if head is not None and ((head[0] or 0) != n or (head[1] or GENESIS) != prev):
        return VerifyResult(False, n, f"chain head says seq {head[0]}, table ends at {n} (rows deleted)", counts)
    return VerifyResult(True, n, None, counts)


def export_rows(conn: sqlite3.Connection) -> list[dict]:
    cur = conn.execute(f"SELECT {', '.join(FIELDS)}, hash FROM audit ORDER BY seq")
    return [dict(zip((*FIELDS, "hash"), values)) for values in cur]
