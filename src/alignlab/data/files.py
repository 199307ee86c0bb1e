"""User prompt files: .txt, .jsonl, .json, .csv, .parquet and ``hf:<name>[@revision][:split][#column]``.

Every problem with a file is a one-line ``DataError`` of the form ``<file>:<line>: <what>; <fix>``
(spec §2.1). Category defaults to the file stem when the record has none.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from alignlab.data.prompts import Prompt
from alignlab.errors import DataError

PROMPT_SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".parquet")
OFFLINE_VARS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


def _fail(path: str | os.PathLike[str], line: int | str, what: str, fix: str) -> DataError:
    msg = f"{path}:{line}: {what}; {fix}"
    return DataError(" ".join(msg.split()))  # always one line


def read_text(path: str | os.PathLike[str]) -> str:
    """Whole file as UTF-8 text (BOM tolerated); errors name the file and the line of the bad byte."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found; check the path")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, expected a file; pass a .txt/.jsonl/.json/.csv file")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _fail(p, line, f"not valid UTF-8 (byte 0x{data[exc.start]:02x})",
                    "re-save the file as UTF-8") from None
    if not text.strip():
        raise _fail(p, 1, "file is empty", "add at least one prompt")
    return text


def read_txt(path: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """(line number, stripped text) for every non-blank line."""
    return [(i, s.strip()) for i, s in enumerate(read_text(path).splitlines(), 1) if s.strip()]


def read_jsonl(path: str | os.PathLike[str], required: Iterable[str] = (),
               allow_strings: bool = False) -> list[tuple[int, dict | str]]:
    """(line number, object) for every non-blank line; each line must be a JSON object with ``required``
    (or, with ``allow_strings``, a bare JSON string)."""
    out: list[tuple[int, dict | str]] = []
    for i, raw in enumerate(read_text(path).splitlines(), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _fail(path, i, f"bad JSON ({exc.msg} at column {exc.colno})",
                        "fix the line so it is one JSON object") from None
        if isinstance(rec, str) and allow_strings:
            out.append((i, rec))
            continue
        if not isinstance(rec, dict):
            raise _fail(path, i, f"expected a JSON object, got {type(rec).__name__}",
                        'write one {"prompt": "..."} object per line')
        for field in required:
            _check_field(path, i, rec, field)
        out.append((i, rec))
    return out


def _check_field(path: str | os.PathLike[str], line: int | str, rec: dict, field: str) -> str:
    if field not in rec:
        raise _fail(path, line, f"missing field '{field}' (have: {', '.join(map(str, rec)) or 'none'})",
                    "add it to every record or name the right field (field=...)")
    value = rec[field]
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, line, f"field '{field}' must be a non-empty string", "fix the record")
    return value.strip()


def read_json_list(path: str | os.PathLike[str]) -> list[tuple[int, object]]:
    """(line number, item) for each element of a top-level JSON list, with each item's starting line."""
    text = read_text(path)
    dec = json.JSONDecoder()
    try:
        dec.decode(text)
    except json.JSONDecodeError as exc:
        raise _fail(path, exc.lineno, f"bad JSON ({exc.msg} at column {exc.colno})", "fix the JSON") from None
    idx = _skip_ws(text, 0)
    if text[idx] != "[":
        raise _fail(path, text.count("\n", 0, idx) + 1, "expected a top-level JSON list",
                    'write ["...", ...] or [{"prompt": "..."}, ...]')
    items: list[tuple[int, object]] = []
    idx = _skip_ws(text, idx + 1)
    while text[idx] != "]":
        item, end = dec.raw_decode(text, idx)
        items.append((text.count("\n", 0, idx) + 1, item))
        idx = _skip_ws(text, end)
        if text[idx] == ",":
            idx = _skip_ws(text, idx + 1)
    return items


def _skip_ws(text: str, idx: int) -> int:
    while idx < len(text) and text[idx] in " \t\r\n":
        idx += 1
    return idx


def _from_records(path: str, records: Iterable[tuple[int | str, object]], field: str,
                  category_field: str, default_category: str) -> list[Prompt]:
    out: list[Prompt] = []
    for line, rec in records:
        if isinstance(rec, str):
            if not rec.strip():
                raise _fail(path, line, "empty prompt string", "remove it or fill it in")
            out.append(Prompt(rec.strip(), default_category, path))
            continue
        if not isinstance(rec, dict):
            raise _fail(path, line, f"expected an object or string, got {type(rec).__name__}", "fix the item")
        text = _check_field(path, line, rec, field)
        cat = rec.get(category_field)
        category = str(cat).strip() if cat not in (None, "") else default_category
        out.append(Prompt(text, category, path))
    return out


def _read_csv(path: str, column: str, category_field: str) -> list[Prompt]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    header = reader.fieldnames or []
    if column not in header:
        raise _fail(path, 1, f"no column '{column}' (columns: {', '.join(header)})",
                    "name the right one (column=...)")
    out: list[Prompt] = []
    for row in reader:
        text = (row.get(column) or "").strip()
        if not text:
            raise _fail(path, reader.line_num, f"empty value in column '{column}'",
                        "fill it in or drop the row")
        cat = (row.get(category_field) or "").strip() or Path(path).stem
        out.append(Prompt(text, cat, path))
    return out


def _read_parquet(path: str, column: str, category_field: str) -> list[Prompt]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading .parquet needs pyarrow; 'pip install pyarrow' "
                        "or convert the file to .jsonl/.csv") from None
    table = pq.read_table(path)
    if column not in table.column_names:
        raise _fail(path, "row 0", f"no column '{column}' (columns: {', '.join(table.column_names)})",
                    "name the right one (column=...)")
    cats = table.column(category_field).to_pylist() if category_field in table.column_names else None
    records = [(f"row {i + 1}", {"prompt": t, **({"category": cats[i]} if cats else {})})
               for i, t in enumerate(table.column(column).to_pylist())]
    return _from_records(path, records, "prompt", "category", Path(path).stem)


def load_prompt_file(path: str | os.PathLike[str], field: str = "prompt", column: str = "prompt",
                     category_field: str = "category", *, offline: bool = False) -> list[Prompt]:
    """Load prompts from a file or an ``hf:`` spec. ``field`` is the JSON key, ``column`` the CSV/parquet/HF
    column; records without ``category_field`` get the file stem as category. ``offline``: hf cache only."""
    spec = str(path)
    if spec.startswith("hf:"):
        from alignlab.data.hf import load_hf_prompts

        return load_hf_prompts(spec, column=column, category_field=category_field, offline=offline)
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p}: is a directory, expected a file; pass a .txt/.jsonl/.json/.csv file")
    suffix = p.suffix.lower()
    stem = p.stem
    if suffix == ".txt":
        prompts = [Prompt(t, stem, spec) for _i, t in read_txt(p)]
    elif suffix == ".jsonl":
        prompts = _from_records(spec, read_jsonl(p, allow_strings=True), field, category_field, stem)
    elif suffix == ".json":
        prompts = _from_records(spec, read_json_list(p), field, category_field, stem)
    elif suffix == ".csv":
        prompts = _read_csv(spec, column, category_field)
    elif suffix == ".parquet":
        prompts = _read_parquet(spec, column, category_field)
    else:
        raise DataError(f"{p}: unknown prompt file type '{suffix or '(none)'}'; use one of "
                        f"{', '.join(PROMPT_SUFFIXES)} or hf:<name>[@revision][:split][#column]")
    if not prompts:
        raise _fail(p, 1, "no prompts in file", "add at least one prompt")
    return prompts


def load_prompts(source: str | os.PathLike[str] | None, default: Callable[[], list[Prompt]],
                 **kwargs: str) -> list[Prompt]:
    """``default()`` when ``source`` is None; a built-in set name (``harmbench``, ``donotanswer``, ``harmful``,
    ``harmless``, ``borderline``) when no file of that name exists; else ``load_prompt_file(source, **kwargs)``."""
    if source is None:
        return default()
    from alignlab.data.registry import PROMPT_SETS

    if str(source) in PROMPT_SETS and not Path(source).exists():
        return PROMPT_SETS[str(source)][0]()
    return load_prompt_file(source, **kwargs)


def source_provenance(source: str | os.PathLike[str]) -> dict:
    """What to record about a user prompt source: path + SHA-256 of a file, or the parsed ``hf:`` spec."""
    spec = str(source)
    if spec.startswith("hf:"):
        from alignlab.data.hf import parse_hf_spec

        hf = parse_hf_spec(spec)
        return {"hf": hf.name, "revision": hf.revision, "split": hf.split, "column": hf.column}
    p = Path(source)
    if not p.is_file():
        raise DataError(f"{p}: file not found; check the path")
    data = p.read_bytes()
    return {"path": str(p.resolve()), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
