"""Bad --db / --output paths give one `alignlab: error: …` line and exit 2, never a traceback."""

from __future__ import annotations

import os
import sqlite3

import pytest

from alignlab.cli import main


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignlab: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.fixture
def paths(tmp_path):
    regular = tmp_path / "regular.txt"
    regular.write_text("not a directory\n")
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(8192))
    foreign = tmp_path / "foreign.sqlite"  # an SQLite file of some other program
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE bucket (name TEXT)")
    conn.commit()
    conn.close()
    return {"regular": regular, "junk": junk, "foreign": foreign, "dir": tmp_path}


def proxy_argv(db) -> list[str]:
    return ["exfil", "proxy", "--upstream", "http://127.0.0.1:9", "--db", str(db), "--port", "0"]


def test_proxy_db_paths(capsys, paths):
    err = one_line_error(capsys, proxy_argv(paths["regular"] / "egress.db"))
    assert "regular.txt is a regular file" in err
    err = one_line_error(capsys, proxy_argv(paths["junk"]))
    assert "cannot be opened as an SQLite database" in err and "junk.db" in err
    err = one_line_error(capsys, proxy_argv(paths["foreign"]))
    assert "not an alignlab egress database" in err
    err = one_line_error(capsys, proxy_argv(paths["dir"]))
    assert "is a directory" in err
    err = one_line_error(capsys, proxy_argv(paths["dir"] / "missing" / "egress.db"))
    assert "does not exist" in err


def test_audit_db_paths(capsys, paths):
    for action in (["verify"], ["export", "--jsonl"]):
        err = one_line_error(capsys, ["exfil", "audit", *action, "--db", str(paths["junk"])])
        assert "cannot be opened as an SQLite database" in err
        err = one_line_error(capsys, ["exfil", "audit", *action, "--db", str(paths["foreign"])])
        assert "not an alignlab egress database" in err
        err = one_line_error(capsys, ["exfil", "audit", *action, "--db", str(paths["regular"] / "x.db")])
        assert "does not exist" in err


def test_audit_export_output_paths(capsys, tmp_path):
    from alignlab.exfil.budget import BudgetStore, RequestInfo

    db = tmp_path / "egress.db"
    store = BudgetStore(str(db), capacity=1000)
    store.reserve(RequestInfo("r1"), 10)
    store.close()
    err = one_line_error(capsys, ["exfil", "audit", "export", "--db", str(db), "--jsonl", "-o", str(tmp_path)])
    assert "is a directory" in err


def test_compress_output_paths(capsys, paths):
    src = paths["dir"] / "in.txt"
    src.write_text("hello hello hello\n")
    base = ["exfil", "compress", str(src), "--model", "ngram", "-o"]
    err = one_line_error(capsys, [*base, str(paths["dir"])])
    assert "is an existing directory" in err
    err = one_line_error(capsys, [*base, str(paths["regular"] / "out.alc")])
    assert "regular.txt is a regular file" in err
    err = one_line_error(capsys, ["exfil", "decompress", str(src), "-o", str(paths["dir"])])
    assert "is an existing directory" in err
    assert main([*base, str(paths["dir"] / "new" / "out.alc")]) == 0  # a missing directory is created
    capsys.readouterr()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_compress_output_in_unwritable_directory(capsys, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        err = one_line_error(capsys, ["exfil", "compress", str(src), "--model", "ngram", "-o",
                                      str(locked / "out.alc")])
        assert "not writable" in err
    finally:
        locked.chmod(0o700)
