"""Offline training text: Python's own docs and stdlib sources, or user files."""

from __future__ import annotations

import itertools
import sysconfig
from pathlib import Path

import pytest

from alignlab.data import iter_texts, python_text_files
from alignlab.errors import DataError


def test_python_text_files_are_stdlib_sources_without_tests():
    files = python_text_files()
    root = Path(sysconfig.get_paths()["stdlib"])
    assert len(files) > 300
    assert files == sorted(files)
    assert root / "json" / "decoder.py" in files
    for f in files:
        parts = f.relative_to(root).parts
        assert f.suffix == ".py"
        assert not {"test", "tests", "site-packages", "idle_test"} & set(parts)


def test_default_texts_deterministic_per_seed():
    first = list(itertools.islice(iter_texts(None, seed=0), 8))
    assert first == list(itertools.islice(iter_texts(None, seed=0), 8))
    assert first != list(itertools.islice(iter_texts(None, seed=1), 8))
    assert all(isinstance(t, str) and t.strip() for t in first)


def test_txt_jsonl_and_directory_sources(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("para one line\nstill one\n\n\npara two\n", encoding="utf-8")
    assert list(iter_texts(txt)) == ["para one line\nstill one", "para two"]
    jl = tmp_path / "b.jsonl"
    jl.write_text('{"text": "doc a"}\n{"text": "doc b"}\n', encoding="utf-8")
    assert list(iter_texts(str(jl))) == ["doc a", "doc b"]
    d = tmp_path / "dir"
    d.mkdir()
    for i in range(5):
        (d / f"{i}.txt").write_text(f"document {i}", encoding="utf-8")
    docs = list(iter_texts(d, seed=3))
    assert sorted(docs) == [f"document {i}" for i in range(5)]
    assert docs == list(iter_texts(d, seed=3))


def test_text_source_errors(tmp_path):
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"{bad}:2: missing field 'text'"):
        list(iter_texts(bad))
    with pytest.raises(DataError, match="no .txt files"):
        list(iter_texts(_empty_dir(tmp_path)))
    with pytest.raises(DataError, match="unknown text source"):
        list(iter_texts(tmp_path / "x.bin"))


def _empty_dir(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d
