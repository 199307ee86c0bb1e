"""Offline training text for SAEs: text that ships with Python itself, or a user file/dir/``hf:`` dataset.

The default corpus needs nothing installed: the ``pydoc_data.topics`` help texts (the prose of the
language reference) plus the standard library's own ``.py`` sources (tests and site-packages excluded).
"""

from __future__ import annotations

import os
import random
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from alignlab.data.files import read_jsonl, read_text
from alignlab.data.hf import load_hf_rows
from alignlab.errors import DataError

# Directory names skipped under the stdlib: test suites (large, repetitive fixtures), third-party code,
# caches and the bundled pip/setuptools wheels.
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
                           "ensurepip", "config-3", "lib2to3_tests"})


def python_text_files() -> list[Path]:
    """Sorted stdlib ``.py`` files under ``sysconfig.get_paths()["stdlib"]`` (no tests, no site-packages)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Prune excluded directories in place so os.walk never descends into them.
        dirnames[:] = [d for d in dirnames if d not in EXCLUDED_DIRS and not d.startswith("config-")]
        files.extend(Path(dirpath, f) for f in filenames if f.endswith(".py"))
    return sorted(files)


def pydoc_topics() -> list[tuple[str, str]]:
    """(topic name, text) from ``pydoc_data.topics`` in name order; empty if the module is absent."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return []
    return sorted((k, v) for k, v in topics.items() if v.strip())


def _read_source(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def _python_texts(seed: int) -> Iterator[str]:
    docs: list[tuple[str, str | Path]] = [("topic", text) for _name, text in pydoc_topics()]
    docs += [("file", p) for p in python_text_files()]
    random.Random(seed).shuffle(docs)
    for kind, item in docs:
        text = item if kind == "topic" else _read_source(Path(item))
        if text and text.strip():
            yield str(text)


def _paragraphs(text: str) -> Iterator[str]:
    block: list[str] = []
    for line in text.splitlines():
        if line.strip():
            block.append(line)
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


def iter_texts(source: str | os.PathLike[str] | None, *, seed: int = 0, field: str = "text",
               offline: bool = False) -> Iterator[str]:
    """Yield document strings.

    - ``None``: pydoc topics + stdlib sources, in an order fixed by ``seed``;
    - a ``.txt`` file: one document per blank-line-separated paragraph;
    - a ``.jsonl`` file: the ``field`` ("text") of each line;
    - a directory: each ``.txt`` file (recursively) is one document, in an order fixed by ``seed``;
    - ``hf:<name>[@revision][:split][#column]``: the column (default "text") of each row.
    """
    if source is None:
        yield from _python_texts(seed)
        return
    spec = str(source)
    if spec.startswith("hf:"):
        hf, ds = load_hf_rows(spec, offline=offline)
        col = hf.column or field
        if col not in ds.column_names:  # type: ignore[attr-defined]
            raise DataError(f"{spec}: no column '{col}'; add #<column> to the spec")
        yield from (t for t in ds[col] if isinstance(t, str) and t.strip())  # type: ignore[index]
        return
    path = Path(spec)
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise DataError(f"{path}: no .txt files in this directory; add some or pass a .jsonl file")
        random.Random(seed).shuffle(files)
        for f in files:
            yield read_text(f)
    elif path.suffix.lower() == ".txt":
        yield from _paragraphs(read_text(path))
    elif path.suffix.lower() == ".jsonl":
        yield from (rec[field] for _line, rec in read_jsonl(path, required=(field,)))
    else:
        raise DataError(f"{path}: unknown text source; pass a .txt/.jsonl file, a directory of .txt files "
                        "or hf:<name>[#column]")
