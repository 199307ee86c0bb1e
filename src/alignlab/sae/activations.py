"""Activation sources (spec §3.1): hook addresses, early-stopped forwards and fixed-length contexts.

A source tokenises documents into ``context_size`` windows, runs the model only up to the hooked layer
(the hook raises a private sentinel after capturing, so later blocks, the final norm and the unembedding
never run) and yields the activations of the non-special positions as fp32 ``[rows, d]`` tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignlab.errors import AlignlabError

# §3.1 site names -> alignlab.models.hooks points.
SITE_TO_POINT = {"resid_post": "block_out", "resid_pre": "block_in", "attn_out": "attn_out", "mlp_out": "mlp_out"}
POINT_TO_SITE = {v: k for k, v in SITE_TO_POINT.items()}


@dataclass(frozen=True)
class Hook:
    """A hook address: an alignlab hook point (block_in/attn_out/mlp_out/block_out) at a layer."""

    point: str
    layer: int

    @property
    def address(self) -> str:
        """The §3.1 address, e.g. ``resid_post.15``."""
        return f"{POINT_TO_SITE[self.point]}.{self.layer}"


def parse_hook(spec: str, layer: int | None = None, n_layers: int | None = None) -> Hook:
    """``resid_post.15`` | ``block_out.15`` | ``block_out`` + ``layer`` -> Hook (negative layers count back)."""
    site, _, tail = str(spec).partition(".")
    if tail:
        try:
            layer = int(tail)
        except ValueError:
            raise AlignlabError(f"bad hook address {spec!r}; use site.layer, e.g. resid_post.15") from None
    point = SITE_TO_POINT.get(site, site)
    if point not in POINT_TO_SITE:
        known = ", ".join([*SITE_TO_POINT, *POINT_TO_SITE])
        raise AlignlabError(f"unknown hook site {site!r}; choose one of {known}")
    if layer is None:
        raise AlignlabError(f"hook {spec!r} names no layer; write it as {site}.LAYER or pass --layer")
    if n_layers is not None:
        if layer < 0:
            layer += n_layers
        if not 0 <= layer < n_layers:
            raise AlignlabError(f"layer {layer} out of range: the model has {n_layers} blocks (0..{n_layers - 1})")
    return Hook(point, int(layer))


def hook_of_sae(cfg: Any, n_layers: int | None = None, layer: int | None = None) -> Hook:
    """The hook an SAE config was trained at (``hook_point`` may be an address or a bare point).

    ``layer`` overrides the recorded layer; a bare point with ``hook_layer`` < 0 counts as unrecorded.
    """
    point = cfg.hook_point or "block_out"
    if layer is None and "." not in point:
        layer = cfg.hook_layer if cfg.hook_layer is not None and cfg.hook_layer >= 0 else None
        if layer is None:
            raise AlignlabError("the SAE config records no hook layer; pass --layer")
    if layer is not None:
        point = point.partition(".")[0]
    return parse_hook(point, layer, n_layers)


class _StopForward(Exception):
    """Raised from the capture hook to end the forward pass early (never escapes ``run_to_hook``)."""


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def run_to_hook(model: torch.nn.Module, input_ids: Tensor, hook: Hook, attention_mask: Tensor | None = None,
                anatomy: Any = None) -> Tensor:
    """Hidden state ``[batch, seq, d]`` at ``hook``; the forward stops right after the hooked module."""
    from alignlab.models.hooks import hook_context

    captured: dict[str, Tensor] = {}

    def grab(x: Tensor, layer: int) -> None:
        captured["x"] = x.detach()
        raise _StopForward

    try:
        with torch.no_grad(), hook_context(model, [(hook.point, hook.layer, grab)], anatomy):
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        pass
    if "x" not in captured:
        raise AlignlabError(f"hook {hook.address} never fired during the forward pass; check the layer index")
    return captured["x"]


# ---------------------------------------------------------------------------------------------
# Text -> contexts
# ---------------------------------------------------------------------------------------------


def special_ids(tokenizer: Any) -> list[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            ids.add(int(value))
    return sorted(ids)


@dataclass(frozen=True)
class ContextConfig:
    """How documents become fixed-length token windows (spec §3.1)."""

    context_size: int = 128
    """Tokens per context window (the Gated paper used 128, 1024 and 2048)."""
    prepend_bos: bool | None = None
    """Start every window with BOS (None: whenever the tokenizer has a BOS token, as SAELens does)."""
    exclude_special_tokens: bool = True
    """Drop BOS, padding, separators and other special-token positions, and the first position of every
    window (the attention sink: at SmolLM2-135M layer 15 its norm is ~25000 against a median of ~180)."""

    def __post_init__(self) -> None:
        if self.context_size < 2:
            raise AlignlabError(f"context_size must be >= 2, got {self.context_size}")


def iter_id_batches(texts: Iterable[str], tokenizer: Any, cfg: ContextConfig, batch_contexts: int) -> Iterator[Tensor]:
    """Full batches of ``batch_contexts`` context windows as [batch, seq] int64 ids (a last partial batch is dropped)."""
    group: list[list[int]] = []
    for window in iter_contexts(texts, tokenizer, cfg):
        group.append(window)
        if len(group) == batch_contexts:
            yield torch.tensor(group, dtype=torch.long)
            group = []


def iter_contexts(texts: Iterable[str], tokenizer: Any, cfg: ContextConfig, docs_per_call: int = 64) -> Iterator[list[int]]:
    """Pack documents (separated by EOS) into windows of ``cfg.context_size`` token ids, BOS first if asked."""
    bos = getattr(tokenizer, "bos_token_id", None)
    prepend = bos is not None if cfg.prepend_bos is None else cfg.prepend_bos
    if prepend and bos is None:
        raise AlignlabError("prepend_bos is on but the tokenizer has no BOS token; pass --no-prepend-bos")
    sep = getattr(tokenizer, "eos_token_id", None)
    body = cfg.context_size - (1 if prepend else 0)
    pending: list[int] = []
    docs: list[str] = []

    def drain() -> Iterator[list[int]]:
        nonlocal pending
        if docs:
            for ids in tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"]:
                pending.extend(ids)
                if sep is not None:
                    pending.append(int(sep))
            docs.clear()
        start = 0
        while len(pending) - start >= body:
            yield ([int(bos)] if prepend else []) + pending[start : start + body]
            start += body
        pending = pending[start:]

    for text in texts:
        docs.append(text)
        if len(docs) >= docs_per_call:
            yield from drain()
    yield from drain()


def is_heldout(text: str, eval_frac: float) -> bool:
    """Deterministic document-level split by content hash (crc32), independent of order and seed."""
    return (zlib.crc32(text.encode("utf-8", "replace")) % 10_000) < eval_frac * 10_000


def check_eval_frac(eval_frac: float, part: str = "all") -> None:
    """--eval-frac is the held-out share of documents: in [0, 1], and a split it empties is refused."""
    if not 0.0 <= eval_frac <= 1.0:  # also refuses NaN
        raise AlignlabError(f"--eval-frac {eval_frac} is not a fraction of documents: pass a value in [0, 1) "
                            "(default 0.05)")
    if (part, eval_frac) in (("train", 1.0), ("eval", 0.0)):
        raise AlignlabError(f"--eval-frac {eval_frac} leaves the {part!r} split without documents; "
                            "pass a value strictly between 0 and 1 (default 0.05)")


def split_texts(texts: Iterable[str], part: str, eval_frac: float = 0.05) -> Iterator[str]:
    """Documents of ``part`` = train | eval | all; training and evaluation never share a document."""
    if part not in ("train", "eval", "all"):
        raise AlignlabError(f"text split must be train, eval or all, got {part!r}")
    check_eval_frac(eval_frac, part)
    for t in texts:
        if part == "all" or is_heldout(t, eval_frac) == (part == "eval"):
            yield t


def corpus(source: str | None, seed: int = 0, part: str = "train", eval_frac: float = 0.05) -> Iterator[str]:
    """The text stream for a source (None: the offline Python corpus) restricted to one split."""
    from alignlab.data.text import iter_texts

    return split_texts(iter_texts(source, seed=seed), part, eval_frac)


def text_fingerprint(source: str | None, seed: int, part: str, eval_frac: float) -> str:
    """A short hash identifying the text stream (source spec, file size/mtime, seed and split)."""
    record: dict[str, Any] = {"source": source, "seed": seed, "part": part, "eval_frac": eval_frac}
    if source is None:
        record["python"] = sys.version.split()[0]
    elif os.path.exists(source):
        st = Path(source).stat()
        record["file"] = [st.st_size, st.st_mtime_ns]
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The source
# ---------------------------------------------------------------------------------------------


@dataclass
class ActBatch:
    """The activations of one LM batch, restricted to the kept (non-special) positions."""

    acts: Tensor
    """[rows, d] fp32 activations, on the model's device."""
    token_ids: Tensor
    """[rows] int64 token id at each kept position (CPU)."""
    rows_per_context: list[int]
    """Kept rows contributed by each context of the batch, in order."""
    first_context: int
    """Index of the batch's first context in the source's context stream."""


class ActivationSource:
    """Runs ``model`` up to ``hook`` over packed contexts of ``texts`` and yields ``ActBatch`` es."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, hook: Hook, texts: Iterable[str],
                 ctx: ContextConfig | None = None, batch_contexts: int = 32) -> None:
        from alignlab.models.anatomy import map_model

        self.model, self.tokenizer, self.hook, self.texts = model, tokenizer, hook, texts
        self.ctx = ctx or ContextConfig()
        if int(batch_contexts) < 1:
            raise AlignlabError(f"--batch-contexts must be >= 1, got {batch_contexts}")
        self.batch_contexts = int(batch_contexts)
        self.anatomy = map_model(model)
        self.hook = parse_hook(hook.point, hook.layer, self.anatomy.n_layers)
        self.d = self.anatomy.d_model
        self.special = torch.tensor(special_ids(tokenizer), dtype=torch.long)

    def keep_mask(self, ids: Tensor) -> Tensor:
        """[batch, seq] bool: positions whose activations are kept (computed on CPU from the ids alone)."""
        keep = torch.ones_like(ids, dtype=torch.bool)
        if not self.ctx.exclude_special_tokens:
            return keep
        if self.special.numel():
            keep = ~torch.isin(ids, self.special)
        keep[:, 0] = False  # BOS or, without one, the attention sink (massive norm)
        return keep

    def batches(self, start_context: int = 0, skip_rows: int = 0) -> Iterator[ActBatch]:
        """Yield batches from context ``start_context`` on, dropping its first ``skip_rows`` kept rows."""
        device = model_device(self.model)
        group: list[list[int]] = []
        index = 0
        for window in iter_contexts(self.texts, self.tokenizer, self.ctx):
            if index < start_context:  # resume: tokenise only, no forward
                index += 1
                continue
            group.append(window)
            index += 1
            if len(group) == self.batch_contexts:
                yield self._run(group, index - len(group), skip_rows, device)
                group, skip_rows = [], 0
        if group:
            yield self._run(group, index - len(group), skip_rows, device)

    def _run(self, group: list[list[int]], first: int, skip_rows: int, device: torch.device) -> ActBatch:
        ids = torch.tensor(group, dtype=torch.long)  # [b, seq]
        keep = self.keep_mask(ids)
        if skip_rows:
            first_keep = keep[0].nonzero().flatten()[:skip_rows]
            keep[0, first_keep] = False
        hidden = run_to_hook(self.model, ids.to(device), self.hook, anatomy=self.anatomy)  # [b, seq, d]
        acts = hidden[keep.to(device)].float()  # [rows, d]
        return ActBatch(acts, ids[keep], keep.sum(1).tolist(), first)

    def rows(self) -> Iterator[Tensor]:
        """Just the activation chunks ([rows, d] fp32)."""
        for b in self.batches():
            if b.acts.shape[0]:
                yield b.acts


def load_lm(spec: str, device: str | None = None, dtype: str | None = None) -> Any:
    """``alignlab.models.load_model`` with the defaults collection wants (bf16 on CUDA, fp32 on CPU)."""
    from alignlab.models import load_model

    return load_model(spec, device=None if device in (None, "auto") else device, dtype=dtype)
