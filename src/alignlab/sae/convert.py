"""``alignlab sae convert``: read an SAE in any supported format, write it in another (spec §6).

Readers (``READERS``): ``saelens`` (SAELens v6 / pre-6.0 folders, alignlab's own), ``sparsify`` (a hookpoint
folder or a run folder of them) and ``dictionary_learning`` (``ae.pt``; a pickle, read only with
``allow_torch_load``). Writers (``WRITERS``): ``saelens`` and ``sparsify`` (TopK only). Formats are detected
from the files present (``detect_format``); every converted SAE records its source under
``metadata.alignlab.config.extra``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from alignlab.errors import AlignlabError
from alignlab.sae.base import SAE


def _read_saelens(path: Path, allow_torch_load: bool) -> list[tuple[str, SAE]]:
    from alignlab.sae.saelens_format import load_sae

    return [(path.name, load_sae(path))]


def _read_sparsify(path: Path, allow_torch_load: bool) -> list[tuple[str, SAE]]:
    from alignlab.sae.sparsify_format import hookpoint_dirs, is_sparsify_dir, load_sparsify

    dirs = [path] if is_sparsify_dir(path) else hookpoint_dirs(path)
    if not dirs:
        raise AlignlabError(f"{path}: no sparsify hookpoint folder (cfg.json + sae.safetensors) found")
    return [(d.name, load_sparsify(d)) for d in dirs]


def _read_dictlearn(path: Path, allow_torch_load: bool) -> list[tuple[str, SAE]]:
    from alignlab.sae.dictlearn_format import load_dictlearn

    name = path.stem if path.is_file() else path.name
    return [(name, load_dictlearn(path, allow_torch_load=allow_torch_load))]


def _write_saelens(sae: SAE, out: Path) -> Path:
    from alignlab.sae.saelens_format import save_sae

    return save_sae(sae, out)


def _write_sparsify(sae: SAE, out: Path) -> Path:
    from alignlab.sae.sparsify_format import save_sparsify

    return save_sparsify(sae, out)


READERS: dict[str, Callable[[Path, bool], list[tuple[str, SAE]]]] = {
    "saelens": _read_saelens,
    "sparsify": _read_sparsify,
    "dictionary_learning": _read_dictlearn,
}
WRITERS: dict[str, Callable[[SAE, Path], Path]] = {"saelens": _write_saelens, "sparsify": _write_sparsify}


def detect_format(path: str | os.PathLike[str]) -> str:
    """The reader for ``path`` from the files it holds; a one-line error when none fits."""
    from alignlab.sae.dictlearn_format import is_dictlearn
    from alignlab.sae.saelens_format import CFG_FILE, WEIGHTS_FILE
    from alignlab.sae.sparsify_format import hookpoint_dirs, is_sparsify_dir

    p = Path(path)
    if not p.exists():
        raise AlignlabError(f"{p} does not exist")
    if p.is_dir() and (p / CFG_FILE).is_file() and (p / WEIGHTS_FILE).is_file():
        return "saelens"
    if p.is_dir() and (is_sparsify_dir(p) or hookpoint_dirs(p)):
        return "sparsify"
    if is_dictlearn(p):
        return "dictionary_learning"
    raise AlignlabError(
        f"{p}: not a SAELens folder (cfg.json + sae_weights.safetensors), a sparsify folder (cfg.json + "
        "sae.safetensors, or a run folder of them) or a dictionary_learning ae.pt; pass --from to say which"
    )


def read_saes(path: str | os.PathLike[str], fmt: str = "auto", *, allow_torch_load: bool = False) -> list[tuple[str, SAE]]:
    """(name, SAE) for every SAE at ``path`` (a sparsify run folder holds one per hookpoint)."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in READERS:
        raise AlignlabError(f"unknown SAE format {fmt!r}; readable: {', '.join(READERS)}")
    return READERS[fmt](Path(path), allow_torch_load)


def convert(path: str | os.PathLike[str], out: str | os.PathLike[str], *, fmt: str = "auto", to: str = "saelens",
            allow_torch_load: bool = False) -> list[Path]:
    """Convert every SAE at ``path`` into ``to`` under ``out`` (``out`` itself for one SAE, ``out/<name>``
    for several); returns the written folders."""
    if to not in WRITERS:
        raise AlignlabError(f"cannot write format {to!r}; writable: {', '.join(WRITERS)}")
    saes = read_saes(path, fmt, allow_torch_load=allow_torch_load)
    root = Path(out)
    return [WRITERS[to](sae, root if len(saes) == 1 else root / name) for name, sae in saes]
