"""Disk cache of activations (spec §3.4): safetensors shards plus a JSON manifest, resumable.

Layout of a cache directory (one per hook)::

    manifest.json               model, hook, d, dtype, context_size, text fingerprint, shards, norm stats
    shard_00000.safetensors     activations [rows, d] (bf16 or fp32) and token_ids [rows]

Every shard is written atomically and the manifest is rewritten after each one, recording the source
cursor (next context, rows of it already written). An interrupted run keeps its completed shards and a
rerun with the same settings continues from the cursor; a rerun with different settings is refused.
Each shard's entry also records the cursor it started at and its size, so every run first checks the shards
against the manifest (present, size, header: names, dtype, shape) and regenerates a missing or damaged one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignlab.errors import AlignlabError, DataError
from alignlab.io import save_tensors_atomic, write_json_atomic
from alignlab.sae.activations import ActivationSource
from alignlab.sae.buffer import ShuffleBuffer

MANIFEST = "manifest.json"
FORMAT = "alignlab-activations/2"  # /2: the first position of every window is excluded
CACHE_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
# Settings that must match for a rerun to extend an existing cache.
IDENTITY_KEYS = ("format", "model", "hook", "d", "dtype", "context_size", "prepend_bos", "exclude_special_tokens",
                 "text_source", "text_fingerprint", "rows_per_shard")


def shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


@dataclass
class _Pending:
    acts: list[Tensor]
    ids: list[Tensor]
    spans: list[list[int]]
    """[context index, first pending kept row of it, pending rows of it] in stream order."""
    rows: int = 0


def _take(p: _Pending, k: int) -> tuple[Tensor, Tensor, int, int]:
    """Pop the first ``k`` rows; return them and the cursor (next context, kept rows of it already taken)."""
    acts, ids = torch.cat(p.acts), torch.cat(p.ids)
    p.acts, p.ids, p.rows = [acts[k:]], [ids[k:]], acts.shape[0] - k
    left, next_ctx, skip = k, 0, 0
    while p.spans and left >= p.spans[0][2]:
        ctx, _start, n = p.spans.pop(0)
        left -= n
        next_ctx, skip = ctx + 1, 0
    if p.spans and left:
        p.spans[0][1] += left
        p.spans[0][2] -= left
    if p.spans:
        next_ctx, skip = p.spans[0][0], p.spans[0][1]
    return acts[:k], ids[:k], next_ctx, skip


def _new_manifest(meta: dict[str, Any], d: int) -> dict[str, Any]:
    return {"format": FORMAT, **meta, "d": d, "n_tokens": 0, "complete": False, "shards": [],
            "next_context": 0, "skip_rows": 0,
            "norm_sums": {"rows": 0, "norm": 0.0, "sq_norm": 0.0, "sum": [0.0] * d}}


def _check_identity(old: dict[str, Any], new: dict[str, Any], directory: Path) -> None:
    for key in IDENTITY_KEYS:
        if key in new and old.get(key) != new[key]:
            raise AlignlabError(f"{directory} holds a cache made with {key}={old.get(key)!r}, not {new[key]!r}; "
                                "pass another --out or delete that directory")


def cache_activations(source: ActivationSource, out_dir: str | Path, n_tokens: int, *, meta: dict[str, Any],
                      rows_per_shard: int = 65_536, dtype: str = "bfloat16", progress: bool = True,
                      on_shard: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Write at least ``n_tokens`` activation rows of ``source`` to ``out_dir``; resume if it exists.

    ``meta`` identifies the source (model, hook, context_size, text_source, text_fingerprint ...).
    ``on_shard(manifest)`` is called after every shard. Returns the final manifest.
    """
    if dtype not in CACHE_DTYPES:
        raise AlignlabError(f"cache dtype must be one of {', '.join(CACHE_DTYPES)}, got {dtype!r}")
    if rows_per_shard < 1 or n_tokens < 1:
        raise AlignlabError(f"--shard-rows and --tokens must be >= 1 (got {rows_per_shard}, {n_tokens})")
    out = Path(out_dir)
    meta = {**meta, "format": FORMAT, "d": source.d, "dtype": dtype, "rows_per_shard": rows_per_shard}
    path = out / MANIFEST
    man = _new_manifest(meta, source.d)
    rebuilt: list[str] = []
    if path.exists():
        old = _read_manifest(path)
        _check_identity(old, meta, out)
        man = old
        rebuilt = _repair_shards(source, out, man)
        man["n_tokens_target"] = n_tokens
        done = man["n_tokens"] >= n_tokens or (man["complete"] and man.get("exhausted"))
        if done and man["n_tokens"] > 0:
            return {**man, "rebuilt": rebuilt}
        man["complete"] = False
    man["n_tokens_target"] = n_tokens
    bar = _bar(progress, n_tokens, man["n_tokens"])
    pending = _Pending([], [], [])
    torch_dtype = CACHE_DTYPES[dtype]
    exhausted = True
    start_ctx, start_skip = man["next_context"], man["skip_rows"]
    for batch in source.batches(start_ctx, start_skip):
        pending.acts.append(batch.acts.to(torch_dtype).cpu())
        pending.ids.append(batch.token_ids.to(torch.int32))
        first_skip = start_skip if batch.first_context == start_ctx else 0
        pending.spans += [[batch.first_context + i, first_skip if i == 0 else 0, n]
                          for i, n in enumerate(batch.rows_per_context) if n]
        pending.rows += batch.acts.shape[0]
        while pending.rows >= min(rows_per_shard, n_tokens - man["n_tokens"]) > 0:
            _flush(out, man, pending, min(rows_per_shard, n_tokens - man["n_tokens"]), bar)
            if on_shard is not None:
                on_shard(man)
        if man["n_tokens"] >= n_tokens:
            exhausted = False
            break
    if pending.rows and man["n_tokens"] < n_tokens:
        _flush(out, man, pending, pending.rows, bar)
    if bar is not None:
        bar.close()
    if man["n_tokens"] == 0:  # no manifest is written: a rerun must not report an empty cache as done
        raise DataError(f"the text source produced no tokens for the {meta.get('text_split', 'chosen')!r} split; "
                        "check --text, --split and --eval-frac")
    man["complete"], man["exhausted"] = True, exhausted and man["n_tokens"] < n_tokens
    write_json_atomic(path, _public(man))
    return {**_public(man), "rebuilt": rebuilt}


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        man = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path}: not valid JSON; delete the cache directory and run `alignlab sae cache` again") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT or not isinstance(man.get("shards"), list):
        raise DataError(f"{path}: not an alignlab activation cache; pass another --out or delete that directory")
    return man


_SAFETENSORS_DTYPES = {"bfloat16": "BF16", "float32": "F32", "float16": "F16"}


def shard_problem(out: Path, entry: dict[str, Any], d: int, dtype: str) -> str | None:
    """Why the shard ``entry`` of a manifest does not match its file (None when it does)."""
    from safetensors import safe_open

    file = out / entry["file"]
    if not file.is_file():
        return "missing"
    if "bytes" in entry and file.stat().st_size != entry["bytes"]:
        return f"{file.stat().st_size} bytes, manifest says {entry['bytes']}"
    try:
        with safe_open(str(file), framework="pt") as f:
            if set(f.keys()) != {"activations", "token_ids"}:
                return "unexpected tensors"
            acts = f.get_slice("activations")
            shape, got = list(acts.get_shape()), acts.get_dtype()
    except Exception as exc:  # noqa: BLE001 - an unreadable header of any kind means: rebuild it
        return f"unreadable ({type(exc).__name__})"
    if shape != [entry["rows"], d] or got != _SAFETENSORS_DTYPES[dtype]:
        return f"activations {got}{shape}, manifest says {_SAFETENSORS_DTYPES[dtype]}{[entry['rows'], d]}"
    return None


def _repair_shards(source: ActivationSource, out: Path, man: dict[str, Any]) -> list[str]:
    """Regenerate every shard whose file does not match the manifest, from the cursor it started at."""
    rebuilt = []
    for entry in man["shards"]:
        problem = shard_problem(out, entry, int(man["d"]), man["dtype"])
        if problem is None:
            continue
        if "start" not in entry:
            raise DataError(f"{out / entry['file']} is {problem} and this cache predates per-shard cursors; "
                            f"delete {out} and run `alignlab sae cache` again")
        pending = _Pending([], [], [])
        for batch in source.batches(*entry["start"]):
            pending.acts.append(batch.acts.to(CACHE_DTYPES[man["dtype"]]).cpu())
            pending.ids.append(batch.token_ids.to(torch.int32))
            pending.rows += batch.acts.shape[0]
            if pending.rows >= entry["rows"]:
                break
        if pending.rows < entry["rows"]:
            raise DataError(f"the text source no longer yields {out / entry['file']}; delete {out} and cache again")
        rows = entry["rows"]
        file = out / entry["file"]
        save_tensors_atomic(file, {"activations": torch.cat(pending.acts)[:rows], "token_ids": torch.cat(pending.ids)[:rows]})
        entry["bytes"] = file.stat().st_size
        rebuilt.append(entry["file"])
    if rebuilt:
        write_json_atomic(out / MANIFEST, _public(man))
    return rebuilt


def _flush(out: Path, man: dict[str, Any], pending: _Pending, k: int, bar: Any) -> None:
    start = [man["next_context"], man["skip_rows"]]  # the cursor this shard starts at (for a rebuild)
    acts, ids, next_ctx, skip = _take(pending, k)
    name = shard_name(len(man["shards"]))
    save_tensors_atomic(out / name, {"activations": acts, "token_ids": ids})
    x = acts.double()
    sums = man["norm_sums"]
    sums["rows"] += x.shape[0]
    sums["norm"] += float(x.norm(dim=1).sum())
    sums["sq_norm"] += float(x.pow(2).sum())
    sums["sum"] = (torch.tensor(sums["sum"], dtype=torch.float64) + x.sum(0)).tolist()
    man["shards"].append({"file": name, "rows": int(acts.shape[0]), "start": start, "bytes": (out / name).stat().st_size})
    man["n_tokens"] += int(acts.shape[0])
    man["next_context"], man["skip_rows"] = next_ctx, skip
    write_json_atomic(out / MANIFEST, _public(man))
    if bar is not None:
        bar.update(int(acts.shape[0]))


def _public(man: dict[str, Any]) -> dict[str, Any]:
    sums = man["norm_sums"]
    rows = max(sums["rows"], 1)
    man["norm_stats"] = {"mean_norm": sums["norm"] / rows, "mean_sq_norm": sums["sq_norm"] / rows,
                         "mean": [v / rows for v in sums["sum"]]}
    return man


def _bar(enabled: bool, total: int, initial: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=None, desc="sae cache", unit="tok", unit_scale=True)


class ActivationCache:
    """Reader for a cache directory: validated shards, shuffled batches or everything at once."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        path = self.dir / MANIFEST
        if not path.is_file():
            raise DataError(f"{self.dir}: no {MANIFEST}; create the cache with `alignlab sae cache`")
        try:
            self.manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg}); delete the cache and run `alignlab sae cache` again") from None
        if self.manifest.get("format") != FORMAT or not self.manifest.get("shards"):
            raise DataError(f"{path}: not an alignlab activation cache with shards; run `alignlab sae cache` again")
        self.d = int(self.manifest["d"])
        self.n_tokens = int(self.manifest["n_tokens"])

    @property
    def shards(self) -> list[str]:
        return [s["file"] for s in self.manifest["shards"]]

    def load_shard(self, i: int, device: torch.device | str | None = None) -> Tensor:
        """Shard ``i``'s activations ``[rows, d]`` in the cache dtype, validated (width, finiteness)."""
        from safetensors import SafetensorError, safe_open

        path = self.dir / self.shards[i]
        if not path.is_file():
            raise DataError(f"{path}: shard listed in {MANIFEST} is missing; run `alignlab sae cache` again to rewrite it")
        try:
            with safe_open(str(path), framework="pt", device=str(device or "cpu")) as f:
                if "activations" not in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                    raise DataError(f"{path}: no 'activations' tensor; the file is not an alignlab cache shard")
                acts = f.get_tensor("activations")
        except SafetensorError as exc:
            raise DataError(f"{path}: unreadable safetensors shard ({exc}); delete it and rerun `alignlab sae cache`") from None
        if acts.ndim != 2 or acts.shape[1] != self.d:
            raise DataError(f"{path}: activations have shape {tuple(acts.shape)} but {MANIFEST} says width d={self.d}; "
                            "the shard belongs to another cache, rerun `alignlab sae cache`")
        if not bool(torch.isfinite(acts).all()):
            row = int((~torch.isfinite(acts)).any(1).nonzero()[0])
            raise DataError(f"{path}: NaN/inf activation at row {row}; delete the shard and rerun `alignlab sae cache`")
        return acts

    def chunks(self, seed: int = 0, epochs: int | None = 1, device: torch.device | str | None = None,
               rank: int = 0, world: int = 1) -> Iterator[Tensor]:
        """Shards in a seeded order per epoch (``epochs=None`` loops forever); with ``world`` > 1, rank r reads
        every world-th shard of each epoch's order, so the ranks of a DDP run read disjoint shards."""
        if world > len(self.shards):
            raise DataError(f"{self.dir} has {len(self.shards)} shards, fewer than the {world} processes; cache again "
                            "with a smaller --shard-rows so every process gets its own shards")
        gen = torch.Generator().manual_seed(seed)
        epoch = 0
        while epochs is None or epoch < epochs:
            for i in torch.randperm(len(self.shards), generator=gen).tolist()[rank::world]:
                yield self.load_shard(i, device)
            epoch += 1

    def batches(self, batch_size: int, *, seed: int = 0, buffer_rows: int = 1_000_000, epochs: int | None = None,
                device: torch.device | str | None = None, rank: int = 0, world: int = 1) -> ShuffleBuffer:
        """Shuffled ``[batch_size, d]`` fp32 batches (through the §3.3 buffer); supports ``skip(n)``.
        ``rank``/``world``: this process's disjoint share of the shards under DDP."""
        capacity = max(batch_size, min(buffer_rows, self.n_tokens // world))
        return ShuffleBuffer(self.chunks(seed, epochs, device, rank, world), batch_size, capacity, seed=seed,
                             device=device)

    def load_all(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """Every row ``[n_tokens, d]`` in shard order (optionally cast), e.g. to keep a cache on the GPU."""
        parts = [self.load_shard(i, device) for i in range(len(self.shards))]
        out = torch.cat(parts)
        return out if dtype is None else out.to(dtype)
