"""One-token forwards over a preallocated, sliding KV cache: the contract between the LM probability model
and the network it runs (spec §6: one computation path, shared by encoder and decoder).

A *stepper* holds the KV cache of ``rows`` lockstep streams. ``forward(ids, pos)`` appends one token per
row at position ``pos`` (the same for every row) and returns the next-token logits [rows, V] in float32;
``slide(keep_last)`` keeps cache entry 0 (the attention sink) and the newest ``keep_last`` entries.

:class:`HFStep` runs the model's own Hugging Face forward with a buffer cache (any causal LM). For the
model classes in :data:`alignlab.exfil.llama_step.SUPPORTED` :func:`make_stepper` returns the lean
:class:`~alignlab.exfil.llama_step.LlamaStep` instead: the same operations without the HF forward's
per-call machinery, and grouped-query attention in its packed form (bit-identical to HF's ``pack_gqa``
path; see that module).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from alignlab.errors import AlignlabError


class Stepper(Protocol):
    def forward(self, ids: list[int], pos: int) -> torch.Tensor:
        """Logits [rows, V] (float32) of the token after ``ids`` (one per row, at position ``pos``)."""
        ...

    def slide(self, keep_last: int) -> None: ...


def _buffer_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        """A full-attention cache layer in one preallocated [B, H, capacity, D] buffer: appending writes
        one slice (no per-step concatenation copying the whole cache), sliding moves the kept tail once."""

        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity = capacity
            self.length = 0

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            self.device = key_states.device
            shape_k = (*key_states.shape[:-2], self.capacity, key_states.shape[-1])
            shape_v = (*value_states.shape[:-2], self.capacity, value_states.shape[-1])
            self.k_buf = torch.empty(shape_k, dtype=key_states.dtype, device=self.device)
            self.v_buf = torch.empty(shape_v, dtype=value_states.dtype, device=self.device)
            self.is_initialized = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise AlignlabError(f"KV cache overflow ({end} > {self.capacity} positions); this is a bug")
            self.k_buf[..., self.length:end, :] = key_states
            self.v_buf[..., self.length:end, :] = value_states
            self._set_length(end)
            return self.keys, self.values

        def _set_length(self, n: int) -> None:
            self.length = n
            self.keys = self.k_buf[..., :n, :]  # [B, H_kv, n, D] views, no copy
            self.values = self.v_buf[..., :n, :]

        def get_seq_length(self) -> int:
            return self.length

        def slide(self, keep_last: int) -> None:
            """Keep entry 0 (the attention sink) and the newest ``keep_last`` entries."""
            n = self.length
            self.k_buf[..., 1:1 + keep_last, :] = self.k_buf[..., n - keep_last:n, :].clone()
            self.v_buf[..., 1:1 + keep_last, :] = self.v_buf[..., n - keep_last:n, :].clone()
            self._set_length(1 + keep_last)

    return BufferLayer


def new_cache(config: Any, capacity: int) -> Any:
    """A DynamicCache whose full-attention layers are preallocated buffers (other layer types kept)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layer_cls = _buffer_layer_class()
    cache = DynamicCache(config=config)
    cache.layers = [layer_cls(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


class HFStep:
    """The reference stepper: the model's own forward (any HF causal LM) through :func:`new_cache`."""

    def __init__(self, model: Any, capacity: int) -> None:
        self.model = model
        self.cache = new_cache(model.config, capacity)

    def forward(self, ids: list[int], pos: int) -> torch.Tensor:
        tokens = torch.tensor(ids, dtype=torch.long).view(-1, 1)  # [rows, 1]
        positions = torch.full_like(tokens, pos)  # [rows, 1]: lockstep, so one position for all
        out = self.model(input_ids=tokens, position_ids=positions, cache=self.cache, use_cache=True,
                         logits_to_keep=1)
        return out.logits[:, -1].float()  # [rows, V]

    def slide(self, keep_last: int) -> None:
        for layer in self.cache.layers:
            if hasattr(layer, "slide"):
                layer.slide(keep_last)


def make_stepper(model: Any, rows: int, capacity: int, lean: Any = None) -> Stepper:
    """``lean`` (a :class:`~alignlab.exfil.llama_step.LlamaWeights` or None) selects the lean stepper."""
    if lean is not None:
        from alignlab.exfil.llama_step import LlamaStep

        return LlamaStep(lean, rows, capacity)
    return HFStep(model, capacity)
