"""Prompt file formats and their one-line, file-and-line-naming errors."""

from __future__ import annotations

import hashlib
import json

import pytest

from alignlab.data import Prompt, load_prompt_file, load_prompts, source_provenance
from alignlab.errors import DataError


def _write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_txt_one_prompt_per_line_skips_blank_lines(tmp_path):
    path = _write(tmp_path, "mine.txt", "first prompt\n\n  second prompt  \nthird")  # no final newline
    prompts = load_prompt_file(path)
    assert [p.text for p in prompts] == ["first prompt", "second prompt", "third"]
    assert {p.category for p in prompts} == {"mine"}
    assert prompts[0].source == str(path)


def test_jsonl_with_and_without_category_and_custom_field(tmp_path):
    path = _write(tmp_path, "p.jsonl", '{"prompt": "a b", "category": "x"}\n\n{"prompt": "c d"}\n')
    assert load_prompt_file(path) == [Prompt("a b", "x", str(path)), Prompt("c d", "p", str(path))]
    path2 = _write(tmp_path, "q.jsonl", '{"instruction": "hello", "kind": "greet"}\n')
    (p,) = load_prompt_file(path2, field="instruction", category_field="kind")
    assert (p.text, p.category) == ("hello", "greet")
    path3 = _write(tmp_path, "r.jsonl", '"bare string"\n{"prompt": "object"}\n')
    assert [p.text for p in load_prompt_file(path3)] == ["bare string", "object"]


def test_json_list_of_objects_and_of_strings(tmp_path):
    data = [{"prompt": "one", "category": "c1"}, {"prompt": "two"}]
    objs = _write(tmp_path, "o.json", json.dumps(data, indent=1))
    assert [(p.text, p.category) for p in load_prompt_file(objs)] == [("one", "c1"), ("two", "o")]
    strs = _write(tmp_path, "s.json", '["alpha", "beta", "gamma"]')
    assert [p.text for p in load_prompt_file(strs)] == ["alpha", "beta", "gamma"]


def test_csv_column_and_category(tmp_path):
    path = _write(tmp_path, "c.csv", 'goal,category\n"Say hi, politely",greet\nCount to three,maths\n')
    prompts = load_prompt_file(path, column="goal")
    got = [(p.text, p.category) for p in prompts]
    assert got == [("Say hi, politely", "greet"), ("Count to three", "maths")]


def test_utf8_bom_is_accepted(tmp_path):
    path = _write(tmp_path, "bom.txt", "\ufeffcafé prompt\n".encode())
    assert load_prompt_file(path)[0].text == "café prompt"


def test_load_prompts_uses_default_only_when_source_is_none(tmp_path):
    path = _write(tmp_path, "x.txt", "from file\n")
    default = lambda: [Prompt("default", "d", "test")]
    assert load_prompts(None, default)[0].text == "default"
    assert load_prompts(str(path), default)[0].text == "from file"
    assert {p.category for p in load_prompts("borderline", default)} > {"computing"}  # built-in set name


def test_source_provenance(tmp_path):
    path = _write(tmp_path, "x.txt", "one\n")
    prov = source_provenance(path)
    assert prov["sha256"] == hashlib.sha256(b"one\n").hexdigest() and prov["bytes"] == 4
    assert source_provenance("hf:a/b@r:test#q") == {"hf": "a/b", "revision": "r", "split": "test", "column": "q"}
    with pytest.raises(DataError, match="file not found"):
        source_provenance(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    ("name", "content", "line", "words"),
    [
        ("empty.txt", "", 1, "empty"),
        ("blank.jsonl", "\n  \n", 1, "empty"),
        ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": "ok2"}\n{"prompt": oops}\n', 3, "bad JSON"),
        ("missing.jsonl", '{"prompt": "ok"}\n{"text": "no prompt field"}\n', 2, "missing field 'prompt'"),
        ("nonstr.jsonl", '{"prompt": "ok"}\n{"prompt": 5}\n', 2, "non-empty string"),
        ("latin1.txt", "good line\nbad \xe9 line\n".encode("latin-1"), 2, "not valid UTF-8"),
        ("nocol.csv", "text,category\nhello,x\n", 1, "no column 'prompt'"),
        ("emptycell.csv", "prompt\nhello\n\"\"\n", 3, "empty value"),
        ("bad.json", '[\n  {"prompt": "a"},\n  {"prompt": }\n]\n', 3, "bad JSON"),
        ("notlist.json", '{"prompt": "a"}', 1, "top-level JSON list"),
        ("missing.json", '[\n {"prompt": "a"},\n {"p": "b"}\n]', 3, "missing field 'prompt'"),
        ("array.jsonl", '[1, 2]\n', 1, "expected a JSON object"),
    ],
)
def test_errors_name_file_and_line(tmp_path, name, content, line, words):
    path = _write(tmp_path, name, content)
    with pytest.raises(DataError) as info:
        load_prompt_file(path)
    msg = str(info.value)
    assert f"{path}:{line}:" in msg
    assert words in msg
    assert "\n" not in msg


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="unknown prompt file type"):
        load_prompt_file(_write(tmp_path, "x.xml", "<a/>"))
    with pytest.raises(DataError, match="file not found"):
        load_prompt_file(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="is a directory"):
        load_prompt_file(tmp_path)
