"""``hf:<name>[@revision][:split][#column]`` sources through the optional `datasets` package.

Offline (``offline=True``, ``HF_DATASETS_OFFLINE`` or ``HF_HUB_OFFLINE``) reads the local cache only; an
uncached dataset, a missing package or a missing column is a one-line DataError (spec §2.1).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from alignlab.data.files import OFFLINE_VARS, _from_records
from alignlab.data.prompts import Prompt
from alignlab.errors import DataError


@dataclass(frozen=True)
class HFSpec:
    """Parsed ``hf:<name>[@revision][:split][#column]``."""

    name: str
    revision: str | None
    split: str
    column: str | None


def parse_hf_spec(spec: str) -> HFSpec:
    if not spec.startswith("hf:") or len(spec) <= 3:
        raise DataError(f"{spec!r}: expected hf:<name>[@revision][:split][#column]")
    rest, _, column = spec[3:].partition("#")
    rest, _, split = rest.partition(":")
    name, _, revision = rest.partition("@")
    if not name:
        raise DataError(f"{spec!r}: missing dataset name; expected hf:<name>[@revision][:split][#column]")
    return HFSpec(name, revision or None, split or "train", column or None)


def load_hf_rows(spec: str, offline: bool = False) -> tuple[HFSpec, object]:
    """Load an ``hf:`` dataset split with `datasets`; ``offline`` (or HF_DATASETS_OFFLINE/HF_HUB_OFFLINE)
    means the local cache only, and an uncached dataset is a DataError."""
    hf = parse_hf_spec(spec)
    if offline:  # read by datasets/huggingface_hub at import time, so set before importing
        for var in OFFLINE_VARS:
            os.environ[var] = "1"
    try:
        import datasets
    except ImportError:
        raise DataError(f"{spec}: hf: sources need the 'datasets' package; 'pip install datasets' "
                        "or download the data to a .jsonl/.csv file") from None
    if offline:
        for flag in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):  # already-imported datasets: flip its config
            if hasattr(getattr(datasets, "config", None), flag):
                setattr(datasets.config, flag, True)
    try:
        ds = datasets.load_dataset(hf.name, revision=hf.revision, split=hf.split)
    except Exception as exc:  # datasets raises many unrelated types; re-raised as one clear error
        offline = any(os.environ.get(v, "").lower() in ("1", "true") for v in OFFLINE_VARS)
        hint = "it is not in the local cache (offline mode)" if offline else "check name, split and network"
        raise DataError(f"{spec}: could not load ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                        f"{hint}, or pass a local file") from None
    return hf, ds


def load_hf_prompts(spec: str, column: str = "prompt", category_field: str = "category",
                    offline: bool = False) -> list[Prompt]:
    """Prompts from the ``#column`` (else ``column``) of an ``hf:`` dataset split; category = dataset name."""
    hf, ds = load_hf_rows(spec, offline=offline)
    col = hf.column or column
    names = list(ds.column_names)  # type: ignore[attr-defined]
    if col not in names:
        raise DataError(f"{spec}: no column '{col}' (columns: {', '.join(names)}); add #<column> to the spec")
    cats = ds[category_field] if category_field in names else None  # type: ignore[index]
    default = hf.name.rsplit("/", 1)[-1]
    records: Iterator[tuple[str, object]] = (
        (f"row {i + 1}", {"prompt": t, **({"category": cats[i]} if cats else {})})
        for i, t in enumerate(ds[col])  # type: ignore[index]
    )
    return _from_records(spec, records, "prompt", "category", default)
