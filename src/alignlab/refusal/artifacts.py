"""Stage artifacts in a run directory: each stage writes its own files atomically, tagged with a key
(hash of its inputs). A later run reuses an artifact only when the key matches, so an interrupted run
resumes from the last completed stage and a changed input recomputes everything downstream.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from alignlab.io import save_tensors_atomic, write_json_atomic


def key_of(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, name: str) -> Path:
        return self.path / name

    def load_json(self, name: str, key: str) -> dict[str, Any] | None:
        """The artifact's content if it exists and was made from the same inputs, else None."""
        path = self.file(name)
        if not path.is_file():
            return None
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None
        return obj if obj.get("key") == key else None

    def save_json(self, name: str, key: str, obj: dict[str, Any]) -> None:
        write_json_atomic(self.file(name), {"key": key, **obj})

    def load_tensors(self, name: str, key: str) -> dict[str, torch.Tensor] | None:
        from safetensors import safe_open

        path = self.file(name)
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict

    def save_tensors(self, name: str, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
        save_tensors_atomic(self.file(name), tensors, {"key": key, **meta})
