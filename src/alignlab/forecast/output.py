"""Output side of the forecast commands: the --out directory, files with the user's umask, warnings.

Files go through ``alignlab.io.atomic_path`` (temporary file, then rename). ``tempfile.mkstemp`` creates the
temporary file with mode 0600, so the mode is set from the umask before the rename, as ``open()`` would.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from alignlab.errors import AlignlabError
from alignlab.io import atomic_path


def _plain(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def umask_mode() -> int:
    """0666 less the process umask: the mode a plain ``open(path, "w")`` would give."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def prepare_out(out: str | None) -> Path | None:
    """Create --out (a directory) and check that it is writable before any work is done."""
    if out is None:
        return None
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise AlignlabError(f"--out {out} is an existing file; pass a directory (created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise AlignlabError(
            f"--out {out} cannot be written ({exc.strerror or exc.__class__.__name__}); "
            "pass a writable directory"
        ) from None
    return path


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write with the user's umask."""
    text = json.dumps(obj, indent=2, default=_plain) + "\n"
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
            os.chmod(tmp, umask_mode())
    except OSError as exc:
        raise AlignlabError(f"cannot write {path} ({exc.strerror}); pass a writable --out") from None


def save_figure(fig, path: Path) -> None:
    """Atomic PNG write with the user's umask; closes the figure."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
            os.chmod(tmp, umask_mode())
    except OSError as exc:
        raise AlignlabError(f"cannot write {path} ({exc.strerror}); pass a writable --out") from None
    finally:
        plt.close(fig)


def dropped_draw_warning(non_finite: int, samples: int, params: str, mode: str) -> list[str]:
    """A warning when a requirement run dropped non-finite draws (e.g. a large sd_alpha), else nothing."""
    if not non_finite:
        return []
    return [
        f"{non_finite} of {samples} requirement draws ({100 * non_finite / samples:.1f}%) gave non-finite "
        f"compute and were dropped (params {params}, mode {mode}); the update fits the rest, the raw and "
        "scaled variants count them as never arriving; lower the sd_* noise of the parameter file"
    ]


def emit_warnings(warnings: list[str]) -> None:
    for w in warnings:
        print(f"alignlab: warning: {w}", file=sys.stderr)
