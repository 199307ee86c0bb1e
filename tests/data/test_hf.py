"""``hf:`` sources, exercised against a stand-in `datasets` module (tests never use the network)."""

from __future__ import annotations

import sys
import types

import pytest

from alignlab.data import iter_texts, load_prompt_file
from alignlab.data.hf import parse_hf_spec
from alignlab.errors import DataError


class _FakeSplit:
    def __init__(self, columns: dict[str, list]):
        self._columns = columns
        self.column_names = list(columns)

    def __getitem__(self, name: str) -> list:
        return self._columns[name]


def _fake_datasets(monkeypatch, columns: dict[str, list] | None = None, fail: Exception | None = None):
    calls: list[dict] = []

    def load_dataset(name, revision=None, split=None):
        calls.append({"name": name, "revision": revision, "split": split})
        if fail is not None:
            raise fail
        return _FakeSplit(columns or {})

    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    module.config = types.SimpleNamespace(HF_DATASETS_OFFLINE=False, HF_HUB_OFFLINE=False)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    return module, calls


def test_parse_hf_spec():
    s = parse_hf_spec("hf:tatsu-lab/alpaca@abc123:test#instruction")
    assert (s.name, s.revision, s.split, s.column) == ("tatsu-lab/alpaca", "abc123", "test", "instruction")
    s = parse_hf_spec("hf:mlabonne/harmful_behaviors")
    assert (s.name, s.revision, s.split, s.column) == ("mlabonne/harmful_behaviors", None, "train", None)
    with pytest.raises(DataError, match="missing dataset name"):
        parse_hf_spec("hf:@rev")


def test_hf_prompts_column_revision_split(monkeypatch):
    _mod, calls = _fake_datasets(monkeypatch, {"instruction": ["Say hi.", "Count to 3."], "input": ["", ""]})
    prompts = load_prompt_file("hf:org/set@v1:test#instruction")
    assert calls == [{"name": "org/set", "revision": "v1", "split": "test"}]
    assert [(p.text, p.category, p.source) for p in prompts] == [
        ("Say hi.", "set", "hf:org/set@v1:test#instruction"),
        ("Count to 3.", "set", "hf:org/set@v1:test#instruction"),
    ]


def test_hf_missing_column_and_load_failure(monkeypatch):
    _fake_datasets(monkeypatch, {"text": ["a"]})
    with pytest.raises(DataError, match=r"no column 'prompt' \(columns: text\)"):
        load_prompt_file("hf:org/set")
    mod, _calls = _fake_datasets(monkeypatch, fail=FileNotFoundError("not cached\nanywhere"))
    with pytest.raises(DataError) as info:
        load_prompt_file("hf:org/uncached", offline=True)
    msg = str(info.value)
    assert "offline" in msg and "FileNotFoundError" in msg and "\n" not in msg
    assert mod.config.HF_DATASETS_OFFLINE is True


def test_hf_without_datasets_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(DataError, match="pip install datasets"):
        load_prompt_file("hf:someone/some-set:train#prompt")


def test_hf_texts(monkeypatch):
    _fake_datasets(monkeypatch, {"text": ["doc one", "", "doc two"], "body": ["x", "y", "z"]})
    assert list(iter_texts("hf:org/corpus")) == ["doc one", "doc two"]
    assert list(iter_texts("hf:org/corpus#body")) == ["x", "y", "z"]
