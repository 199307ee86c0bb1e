"""Stage artifacts in a run directory: each stage writes its own files atomically, tagged with a key
(hash of its inputs). A later run reuses an artifact only when the key matches, so an interrupted run
resumes from the last completed stage and a changed input recomputes everything downstream.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from alignlab.io import ensure_dir, save_tensors_atomic, write_json_atomic


def key_of(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def warn_damaged(path: Path, why: str) -> None:
    print(f"alignlab: warning: {path} is damaged ({why}); recomputing that stage", file=sys.stderr)


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = ensure_dir(path)
        self.removed_stale = self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> list[str]:
        """Delete what a killed run left half-written: ``.NAME.*`` temporary files and directories made by the
        atomic writers (a killed export leaves a whole ``.model.*`` checkpoint directory behind)."""
        removed = []
        for tmp in self.path.glob(".*.*"):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.name.endswith(".tmp"):
                tmp.unlink(missing_ok=True)
            else:
                continue
            removed.append(tmp.name)
        if removed:
            print(f"alignlab: removed {len(removed)} temporary file(s) left by an interrupted run in {self.path}",
                  file=sys.stderr)
        return removed

    def file(self, name: str) -> Path:
        return self.path / name

    def load_json(self, name: str, key: str) -> dict[str, Any] | None:
        """The artifact's content if it exists and was made from the same inputs, else None."""
        path = self.file(name)
        if not path.is_file():
            return None
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            warn_damaged(path, type(exc).__name__)
            return None
        if not isinstance(obj, dict):
            warn_damaged(path, "not a JSON object")
            return None
        return obj if obj.get("key") == key else None

    def save_json(self, name: str, key: str, obj: dict[str, Any]) -> None:
        write_json_atomic(self.file(name), {"key": key, **obj})

    def load_tensors(self, name: str, key: str) -> dict[str, torch.Tensor] | None:
        from safetensors import safe_open

        path = self.file(name)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("key") != key:
                    return None
                return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a truncated file
            warn_damaged(path, str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__)
            return None

    def save_tensors(self, name: str, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
        save_tensors_atomic(self.file(name), tensors, {"key": key, **meta})
