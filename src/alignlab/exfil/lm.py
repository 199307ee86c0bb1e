"""Language-model probability model: logits -> integer frequencies, one computation path (spec §6).

The token sequence is cut into ``n`` contiguous streams that advance in lockstep: at every step one
batched forward feeds each stream's previous token ([rows, 1] on CPU, a fixed compute dtype and number
of intra-op threads, deterministic algorithms) through a preallocated KV cache and returns one
distribution per stream. Encoder and decoder run exactly the same sequence of forward calls on exactly
the same inputs, so both see bit-identical logits; dtype and thread count are in the fingerprint
because they change the rounding. (A teacher-forced forward over a whole window would encode faster,
but its logits differ from the step-by-step ones in the last bits, so it is never used.)

When the context reaches W_ctx tokens the cache slides instead of being re-fed: the first entry (the
start token, which attention uses as a sink; Xiao et al. 2023, "Efficient streaming language models
with attention sinks", §3) and the newest W_ctx/2 − 1 entries are kept, and positions keep counting.
Several streams let one forward (whose cost is mostly reading the weights) serve several tokens; each
stream restarts from the start token, which is what the cut costs in bits (see coder.auto_streams).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from typing import Any

import numpy as np

from alignlab.errors import AlignlabError
from alignlab.exfil.probmodels import Fingerprint, T, UniformBytes

DEFAULT_LM = "smollm2-135m-instruct"
DEFAULT_WCTX = 2048
COMPUTE_DTYPES = ("bfloat16", "float32", "float16", "int4")
"""int4: bfloat16 activations and int4 group-quantised linear weights (see :func:`int4_linears`)."""
DEFAULT_DTYPE = "int4"
"""int4 weights (bfloat16 activations, bfloat16 head) read ~4x fewer weight bytes than bfloat16, which
codes like float32 (5.856 vs 5.858 bits/token on the README's first 800 tokens; int4 +0.1 % on its first
600); encoder and decoder always use the same dtype."""
ROW_MULTIPLE = 4
"""Float GEMMs run on a multiple of 4 rows: with 2 or 3 rows they are slower than with 4 (measured on the
2-core EPYC: 114 and 141 ms vs 102 ms for all of SmolLM2-135M's float32 weights)."""
SEARCH_BLOCK = 512
"""Decoder search: block sums first, then a cumulative sum inside one block (never the whole vocabulary)."""


def quantize(logits: np.ndarray, total: int = T) -> np.ndarray:
    """Integer frequencies f = floor(p·(T − V)) + 1 summing to ``total`` (spec §6); eager reference.

    p = softmax(logits) in float64. The remainder T − Σf goes one by one to the largest entries, ties
    broken by the lower token id (a stable sort), so every token keeps f >= 1 and costs <= log2 T bits.
    """
    x = np.asarray(logits, dtype=np.float64)  # [V]
    v = x.shape[0]
    if v >= total:
        raise AlignlabError(f"vocabulary size {v} must be below the frequency total {total}")
    if not np.all(np.isfinite(x)):
        raise AlignlabError("the model produced non-finite logits; check the model weights and dtype")
    e = np.exp(x - x.max())
    p = e / e.sum()
    f = np.floor(p * (total - v)).astype(np.int64) + 1  # [V]
    rem = int(total - f.sum())
    order = np.argsort(-f, kind="stable")
    if rem > 0:
        q, r = divmod(rem, v)
        f += q
        f[order[:r]] += 1
    elif rem < 0:  # float rounding pushed Σ floor above T − V: take back from the largest entries
        f[order[:-rem]] -= 1
    assert int(f.sum()) == total and int(f.min()) >= 1
    return f


def quantize_rows(logits: np.ndarray, total: int = T) -> np.ndarray:
    """:func:`quantize` for every row of a [B, V] array at once, with a linear-time top-r selection
    instead of a full sort (same result: the r largest keys (f, −id) are unique)."""
    x = np.ascontiguousarray(logits, dtype=np.float64)  # [B, V]
    v = x.shape[1]
    if v >= total:
        raise AlignlabError(f"vocabulary size {v} must be below the frequency total {total}")
    if not np.all(np.isfinite(x)):
        raise AlignlabError("the model produced non-finite logits; check the model weights and dtype")
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    f = np.floor(p * (total - v)).astype(np.int64) + 1  # [B, V]
    tiebreak = np.arange(v - 1, -1, -1, dtype=np.int64)  # the lower id wins a tie
    for row, rem in zip(f, (total - f.sum(axis=1)).tolist()):
        if rem == 0:
            continue
        q, r = divmod(rem, v) if rem > 0 else (0, -rem)
        if r:
            key = row * v + tiebreak
            top = np.argpartition(key, v - r)[v - r:]  # the r largest (f, lower id)
            row[top] += 1 if rem > 0 else -1
        row += q
    assert bool((f.sum(axis=1) == total).all()) and int(f.min()) >= 1
    return f


def symbol_interval(freqs: np.ndarray, sym: int) -> tuple[int, int]:
    """(cum, freq) of ``sym`` under one row of frequencies: one partial sum, no cumulative array."""
    if not 0 <= sym < freqs.shape[0]:
        raise AlignlabError(f"token id {sym} is outside the model's vocabulary of {freqs.shape[0]}")
    return int(freqs[:sym].sum()), int(freqs[sym])


def find_symbol(freqs: np.ndarray, target: int) -> tuple[int, int, int]:
    """(sym, cum, freq) with cum <= target < cum + freq: block sums, then one block's cumulative sum."""
    block_cum = np.cumsum(np.add.reduceat(freqs, np.arange(0, freqs.shape[0], SEARCH_BLOCK)))
    blk = int(np.searchsorted(block_cum, target, side="right"))
    base = int(block_cum[blk - 1]) if blk else 0
    start = blk * SEARCH_BLOCK
    inner = np.cumsum(freqs[start:start + SEARCH_BLOCK]) + base
    j = int(np.searchsorted(inner, target, side="right"))
    cum = int(inner[j - 1]) if j else base
    return start + j, cum, int(freqs[start + j])


def model_digest(model: Any, tokenizer: Any) -> bytes:
    """SHA-256 over the float32 weights (sorted by name) and the tokenizer's vocabulary."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        arr = tensor.detach().to(torch.float32).contiguous().cpu().numpy()
        h.update(memoryview(arr.reshape(-1)).cast("B"))  # the buffer itself: no 0.5 GB copy
    h.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    h.update(json.dumps(sorted(str(t) for t in tokenizer.all_special_tokens)).encode())
    return h.digest()


@contextmanager
def deterministic_torch(threads: int = 1):
    """Fixed thread count and deterministic algorithms for the duration of a coding run."""
    import torch

    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


INT4_GROUP = 32
"""Weights per int4 scale/offset group: the GGUF Q4_1 block size the default model ships in, so its
linear weights d·q + m fit the int4 grid again (up to bfloat16 rounding of d and m)."""


INT8_HEAD = True
"""int8 per-channel head: +0.02 % bits/token on the README's first 600 tokens, half the bfloat16 head's bytes."""


def int4_linears(model: Any) -> int:
    """Swap every nn.Linear but the output head whose shape the CPU int4 kernel accepts for int4-weight
    GEMMs (bfloat16 activations, groups of ``INT4_GROUP``): ~4x less weight traffic than bfloat16. The head
    gets int8 per-channel weights (int4 there cost +0.8 % bits/token on the README, int4 layers +0.1 %).
    Returns the number of int4 layers."""
    import torch

    class Int4Linear(torch.nn.Module):
        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            w = linear.weight.detach().float()  # [N, K]
            n, k = w.shape
            groups = w.reshape(n, k // INT4_GROUP, INT4_GROUP)
            lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
            scale = ((hi - lo) / 15).clamp_min(1e-12)
            q = ((groups - lo) / scale).round().clamp(0, 15).to(torch.int32).reshape(n, k)
            zero = lo + 8 * scale  # the kernel dequantises (q − 8)·scale + zero
            self.k = k
            self.w_packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2)
            self.scale_zero = torch.cat([scale, zero], -1).permute(1, 0, 2).contiguous().to(torch.bfloat16)
            self.bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(
                x.reshape(-1, self.k).to(torch.bfloat16), self.w_packed, INT4_GROUP, self.scale_zero)
            y = y.reshape(*x.shape[:-1], -1)  # [..., N]
            return y if self.bias is None else y + self.bias

    class Int8Linear(torch.nn.Module):
        """Per-output-channel int8 weights (the head: int4 there costs bits, bfloat16 half the traffic)."""

        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            w = linear.weight.detach().float()  # [N, K]
            scale = (w.abs().amax(1) / 127).clamp_min(1e-12)  # [N]
            self.k = w.shape[1]
            self.w_int8 = (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
            self.scale = scale.to(torch.bfloat16)
            self.bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, self.k).to(torch.bfloat16), self.w_int8, self.scale)
            y = y.reshape(*x.shape[:-1], -1)  # [..., N]
            return y if self.bias is None else y + self.bias

    head = model.get_output_embeddings()
    if isinstance(head, torch.nn.Linear) and INT8_HEAD:
        model.set_output_embeddings(Int8Linear(head))
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and child is not head and child.in_features % INT4_GROUP == 0 \
                    and child.out_features % 16 == 0:
                setattr(parent, name, Int4Linear(child))
                swapped += 1
    return swapped


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
            import torch

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


class LMProbabilityModel:
    """A Hugging Face causal LM as a :class:`~alignlab.exfil.probmodels.LockstepModel`."""

    def __init__(self, model: Any, tokenizer: Any, name: str, wctx: int = DEFAULT_WCTX, threads: int = 1,
                 dtype: str = DEFAULT_DTYPE) -> None:
        import torch

        if wctx < 4:
            raise AlignlabError(f"wctx: must be >= 4 tokens, got {wctx}")
        if threads < 1:
            raise AlignlabError(f"threads: must be >= 1, got {threads}")
        if dtype not in COMPUTE_DTYPES:
            raise AlignlabError(f"dtype: choose one of {', '.join(COMPUTE_DTYPES)}, got {dtype!r}")
        if dtype == "int4":  # the swap replaces modules: work on a copy, keep the caller's model intact
            import copy

            model = copy.deepcopy(model)
        torch_dtype = torch.bfloat16 if dtype == "int4" else getattr(torch, dtype)
        self.model = model.to(device="cpu", dtype=torch_dtype).eval()  # in place, as nn.Module.to is
        digest = model_digest(self.model, tokenizer)  # before the int4 swap, which hides the weights
        if dtype == "int4":
            int4_linears(self.model)
        self.tokenizer = tokenizer
        self._in_session = False
        self.wctx = wctx
        self.threads = threads
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.start_id = int(start if start is not None else 0)
        self.pad_id = self.start_id
        cfg = self.model.config
        rotary = any(hasattr(cfg, k) for k in ("rope_parameters", "rope_theta", "rotary_dim", "rotary_pct"))
        # positions keep counting past a slide: fine for rotary (relative) positions, not for learned ones
        self.max_positions = None if rotary else getattr(cfg, "max_position_embeddings", None) or getattr(
            cfg, "n_positions", None)
        self.fingerprint = Fingerprint(name, digest, dtype, wctx, T, threads)
        self.start(1)

    @contextmanager
    def session(self):
        """Context for one coding run: the fingerprint's thread count, deterministic algorithms."""
        with deterministic_torch(self.threads):
            self._in_session = True
            try:
                yield self
            finally:
                self._in_session = False

    def start(self, n_streams: int) -> None:
        self.n_streams = n_streams
        multiple = 1 if self.fingerprint.dtype == "int4" else ROW_MULTIPLE  # the int4 kernel has no slow shapes
        self._rows = -(-n_streams // multiple) * multiple
        self._feed = [self.start_id] * n_streams
        self._pos = 0
        self._cached = 0
        self._cache: Any = None
        self._freqs: np.ndarray | None = None

    def frequencies(self) -> np.ndarray:
        if self._freqs is None:
            if self._in_session:
                self._freqs = self._forward()
            else:
                with deterministic_torch(self.threads):
                    self._freqs = self._forward()
        return self._freqs

    def _forward(self) -> np.ndarray:
        import torch

        if self._cache is None:
            self._cache = new_cache(self.model.config, self.wctx)
        if self.max_positions is not None and self._pos >= self.max_positions:
            raise AlignlabError(f"a stream passed this model's {self.max_positions} learned positions; code the "
                                "input in more streams (--streams) or use a model with rotary positions")
        feed = self._feed + [self.pad_id] * (self._rows - self.n_streams)  # padding rows: never read
        ids = torch.tensor(feed, dtype=torch.long).view(-1, 1)  # [rows, 1]
        positions = torch.full_like(ids, self._pos)  # [rows, 1]: lockstep, so one position for all
        with torch.inference_mode():
            out = self.model(input_ids=ids, position_ids=positions, cache=self._cache, use_cache=True,
                             logits_to_keep=1)
        self._cached += 1
        return quantize_rows(out.logits[:self.n_streams, -1].float().numpy())  # [B, V]

    def advance(self, tokens: list[int]) -> None:
        """Append one token to every stream (the forward for it runs lazily, on the next query)."""
        if len(tokens) != self.n_streams:
            raise AlignlabError(f"advance: expected {self.n_streams} tokens (one per stream), got {len(tokens)}")
        self.frequencies()  # the pending tokens must enter the cache before new ones are queued
        self._pos += 1
        self._feed = list(tokens)
        self._freqs = None
        if self._cached >= self.wctx:  # full: keep the sink and the newest W_ctx/2 − 1 entries
            for layer in self._cache.layers:
                if hasattr(layer, "slide"):
                    layer.slide(self.wctx // 2 - 1)
            self._cached = self.wctx // 2

    def tokenize(self, data: bytes) -> list[int] | None:
        """Token ids if detok(tok(x)) == x byte for byte, else None (the coder then uses byte mode)."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        ids = [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False)]
        return ids if self.detokenize(ids) == data else None

    def detokenize(self, ids: list[int]) -> bytes:
        text = self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return text.encode("utf-8")

    def byte_model(self) -> UniformBytes:
        return UniformBytes()


def load_reference_lm(spec: str = DEFAULT_LM, wctx: int = DEFAULT_WCTX, threads: int = 1,
                      dtype: str = DEFAULT_DTYPE) -> LMProbabilityModel:
    """Load ``spec`` (embedded name, HF id, directory or .gguf) through ``alignlab.models.load_model``."""
    from alignlab.models import load_model

    lm = load_model(spec, device="cpu", dtype="float32")
    return LMProbabilityModel(lm.model, lm.tokenizer, spec, wctx, threads, dtype)
