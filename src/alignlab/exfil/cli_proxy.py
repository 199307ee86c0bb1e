"""`alignlab exfil proxy` and `alignlab exfil audit verify|export` (spec §7)."""

from __future__ import annotations

import argparse
import sys

from alignlab.config import add_dataclass_args, from_args


def register_proxy(cmds: argparse._SubParsersAction) -> None:
    from alignlab.exfil.proxy_config import ProxyConfig

    p = cmds.add_parser("proxy", help="egress meter and limiter in front of an OpenAI-compatible server")
    add_dataclass_args(p, ProxyConfig)
    p.set_defaults(func=_cmd_proxy)

    s = cmds.add_parser("stub-upstream", help="a stub OpenAI-compatible server on loopback (tests, demos)")
    s.add_argument("--port", type=int, default=0, help="port (0 = ephemeral)")
    s.add_argument("--delay", type=float, default=0.0, help="seconds between streamed chunks")
    s.add_argument("--ignore-max-tokens", action="store_true", help="emit 10× max_tokens (overrun test)")
    s.set_defaults(func=_cmd_stub)

    a = cmds.add_parser("audit", help="verify or export the hash-chained audit log")
    acmds = a.add_subparsers(dest="audit_command", metavar="ACTION")
    a.set_defaults(group_parser=a)
    v = acmds.add_parser("verify", help="check the database integrity, the hash chain and its head, and that no "
                          "request was charged beyond its reservation (overrun)")
    v.add_argument("--db", required=True, help="the proxy's SQLite file")
    v.set_defaults(func=_cmd_verify)
    e = acmds.add_parser("export", help="print the audit rows")
    e.add_argument("--db", required=True, help="the proxy's SQLite file")
    e.add_argument("--jsonl", action="store_true", help="one JSON object per line (the only format)")
    e.add_argument("-o", "--output", help="write to this file instead of stdout")
    e.set_defaults(func=_cmd_export)


def _cmd_proxy(args: argparse.Namespace) -> int:
    from alignlab.exfil.proxy import EgressProxy
    from alignlab.exfil.proxy_config import ProxyConfig
    from alignlab.exfil.server import serve

    cfg = from_args(ProxyConfig, args)
    proxy = EgressProxy(cfg)
    if proxy.recovered:
        print(f"recovered {proxy.recovered} reservation(s) left by a dead process (charged in full)",
              file=sys.stderr, flush=True)
    serve(proxy.make_app, cfg.host, cfg.port, banner="egress proxy listening")
    return 0


def _cmd_stub(args: argparse.Namespace) -> int:
    from alignlab.exfil.server import serve
    from alignlab.exfil.stub import StubBehaviour, make_stub_app

    b = StubBehaviour(ignore_max_tokens=args.ignore_max_tokens, delay=args.delay)
    serve(lambda: make_stub_app(b), "127.0.0.1", args.port, banner="stub upstream listening")
    return 0


def _open_db(path: str):
    from pathlib import Path

    from alignlab.errors import DataError
    from alignlab.exfil.budget import connect

    if not Path(path).is_file():
        raise DataError(f"db: {path} does not exist; pass the file given to `alignlab exfil proxy --db`")
    return connect(path)


def _not_egress_db(path: str, exc: Exception):
    from alignlab.errors import DataError

    return DataError(f"db: {path} is an SQLite file but not an alignlab egress database ({exc}); pass the file "
                     "given to `alignlab exfil proxy --db`")


def _cmd_verify(args: argparse.Namespace) -> int:
    import sqlite3

    from alignlab.exfil.audit import verify

    conn = _open_db(args.db)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        res = verify(conn)
        outstanding = conn.execute("SELECT COUNT(*) FROM ledger WHERE state = 'reserved'").fetchone()[0]
    except sqlite3.Error as exc:
        raise _not_egress_db(args.db, exc) from None
    finally:
        conn.close()
    counts = ", ".join(f"{k} {v}" for k, v in sorted(res.decisions.items()))
    print(f"integrity_check: {integrity}; audit rows: {res.rows} ({counts}); in flight: {outstanding}")
    if res.ok and integrity == "ok":
        print("audit chain OK; budget arithmetic OK (no request charged beyond its reservation)")
        return 0
    print(f"audit verify FAILED: {res.problem or 'database integrity check failed'}", file=sys.stderr)
    return 1


def _cmd_export(args: argparse.Namespace) -> int:
    import json
    import sqlite3
    from pathlib import Path

    from alignlab.errors import AlignlabError
    from alignlab.exfil.audit import export_rows
    from alignlab.io import write_text_atomic

    if args.output and Path(args.output).is_dir():
        raise AlignlabError(f"output: {args.output} is a directory; pass a file path for the JSONL export")
    conn = _open_db(args.db)
    try:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in export_rows(conn))
    except sqlite3.Error as exc:
        raise _not_egress_db(args.db, exc) from None
    finally:
        conn.close()
    if args.output:
        try:
            write_text_atomic(args.output, text)
        except OSError as exc:
            raise AlignlabError(f"output: cannot write {args.output} ({exc.strerror or exc}); pass a writable "
                                "file path") from None
    else:
        sys.stdout.write(text)
    return 0
