"""Greedy replies of a model to prompts, cached in a JSON file keyed by model and prompt.

Generating the base model's own replies to the harmless training prompts is the slow part of the
organism recipe, so they are computed once and reused: the cache is one JSON object
``{"format": 1, "replies": {key: {"text": ..., "finished": bool}}}`` where ``key`` is SHA-256 of
(model key, max_new_tokens, rendered chat prompt). A read-only *seed* file (the one shipped with the
package) is consulted first; new replies go to the writable cache file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from alignlab.errors import DataError
from alignlab.io import write_json_atomic
from alignlab.models.generate import Reply, generate_greedy

FORMAT = 1


def reply_key(model_key: str, max_new_tokens: int, rendered_prompt: str) -> str:
    h = hashlib.sha256(f"{model_key}\x00{max_new_tokens}\x00{rendered_prompt}".encode())
    return h.hexdigest()


def read_reply_file(path: Path) -> dict[str, Reply]:
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"reply cache {path} is not valid JSON ({exc.msg}); delete it to regenerate") from exc
    if obj.get("format") != FORMAT or not isinstance(obj.get("replies"), dict):
        raise DataError(f"reply cache {path} has an unknown format; delete it to regenerate")
    return {k: Reply(v["text"], bool(v["finished"])) for k, v in obj["replies"].items()}


def write_reply_file(path: Path, replies: dict[str, Reply], info: dict[str, Any] | None = None) -> None:
    obj = {"format": FORMAT, "info": info or {},
           "replies": {k: {"text": r.text, "finished": r.finished} for k, r in sorted(replies.items())}}
    write_json_atomic(path, obj, indent=1)


def cached_replies(model: Any, fmt: Any, prompts: list[str], *, model_key: str, max_new_tokens: int,
                   cache_path: Path, seed_path: Path | None = None, batch_size: int = 32,
                   progress: bool = True) -> list[Reply]:
    """Replies for ``prompts``, generating only those missing from the seed file and the cache."""
    keys = [reply_key(model_key, max_new_tokens, fmt.render(p)) for p in prompts]
    known = read_reply_file(seed_path) if seed_path is not None else {}
    cache = read_reply_file(cache_path)
    known.update(cache)
    missing: list[int] = []
    pending: set[str] = set()
    for i, k in enumerate(keys):  # first occurrence of each key not yet known
        if k not in known and k not in pending:
            pending.add(k)
            missing.append(i)
    if missing:
        new = generate_greedy(model, fmt, [prompts[i] for i in missing], max_new_tokens, batch_size, progress)
        for i, reply in zip(missing, new):
            cache[keys[i]] = reply
            known[keys[i]] = reply
        write_reply_file(cache_path, cache, {"model": model_key, "max_new_tokens": max_new_tokens})
    return [known[k] for k in keys]


def model_key(spec: str, source: str, dtype: torch.dtype) -> str:
    """Identity of a loaded model for the reply cache: spec, weights location name and dtype."""
    return f"{spec}:{Path(source).name}:{str(dtype).removeprefix('torch.')}"
