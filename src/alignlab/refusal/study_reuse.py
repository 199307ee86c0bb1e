"""Adopt the stage artifacts of an existing `refusal run` directory (e.g. `make demo`'s runs/demo) into the
study's run directory for the same model (issue 16: "nothing recomputed that exists").

Only the key-tagged artifacts of the stages the study runs are copied (prompts, tokens, per-layer means and
directions, RD's selection), and only into a study run directory that lacks them; each is still used only when
its key matches the study's inputs, so adopting a run made with other settings costs nothing but a copy. The
source directory is never written to (the study's test sets may differ from the run's, which would rewrite
its prompts.json).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from alignlab.errors import AlignlabError
from alignlab.io import write_bytes_atomic

STAGE_FILES = (
    "prompts.json",
    "tokens.json",
    "directions.json",
    "directions.safetensors",
    "selection.json",
    "direction.safetensors",
)
"""Artifacts of `refusal run`'s data, tokens, extract and select stages."""
DEFAULT_REUSE = ("runs/demo",)
"""Looked at when --reuse is not given (where `make demo` writes); skipped when absent."""


def run_model(run_dir: Path) -> str | None:
    """The model a `refusal run` directory was made for (its run.json), or None when it is not one."""
    try:
        obj = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        return str(obj["config"]["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def source_for(spec: str, candidates: Sequence[Path]) -> Path | None:
    """The first candidate run directory made for model ``spec``."""
    for path in candidates:
        if path.is_dir() and run_model(path) == spec:
            return path
    return None


def adopt(target: Path, source: Path) -> list[str]:
    """Copy the stage artifacts ``target`` lacks from ``source``; returns the copied names."""
    if source.resolve() == target.resolve():
        return []
    copied = []
    target.mkdir(parents=True, exist_ok=True)
    for name in STAGE_FILES:
        src, dst = source / name, target / name
        if src.is_file() and not dst.exists():
            write_bytes_atomic(dst, src.read_bytes())
            copied.append(name)
    return copied


def check_reuse(paths: Sequence[Path]) -> None:
    """Explicit --reuse directories must be `refusal run` directories."""
    bad = [str(p) for p in paths if run_model(p) is None]
    if bad:
        raise AlignlabError(f"--reuse {bad[0]} is not a `refusal run` directory (no readable run.json)")
