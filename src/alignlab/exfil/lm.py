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

The forward itself is a stepper (:mod:`alignlab.exfil.kvstep`): the lean one-token step of
:mod:`alignlab.exfil.llama_step` for plain Llama models (the default model), the model's own HF forward
otherwise.
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
"""int4: bfloat16 activations and int4 group-quantised linear weights (see :mod:`alignlab.exfil.quantlinear`)."""
DEFAULT_DTYPE = "int4"
"""int4 weights (bfloat16 activations, int8 head) read ~4x fewer weight bytes than bfloat16, which
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
    """:func:`quantize` for every row of a [B, V] array at once: the same float64 operations done in place,
    and a linear-time top-r selection instead of a full sort (:func:`spread_remainder`)."""
    x = np.array(logits, dtype=np.float64)  # [B, V]: a fresh copy, worked on in place
    v = x.shape[1]
    if v >= total:
        raise AlignlabError(f"vocabulary size {v} must be below the frequency total {total}")
    if not np.all(np.isfinite(x)):
        raise AlignlabError("the model produced non-finite logits; check the model weights and dtype")
    np.subtract(x, x.max(axis=1, keepdims=True), out=x)
    np.exp(x, out=x)
    np.divide(x, x.sum(axis=1, keepdims=True), out=x)  # p
    np.multiply(x, total - v, out=x)
    np.floor(x, out=x)
    f = x.astype(np.int64)  # [B, V]
    f += 1
    for row, rem in zip(f, (total - f.sum(axis=1)).tolist()):
        spread_remainder(row, rem)
    assert bool((f.sum(axis=1) == total).all()) and int(f.min()) >= 1
    return f


def spread_remainder(row: np.ndarray, rem: int) -> None:
    """Add ``rem`` to a row of frequencies in place as :func:`quantize` does: ⌊rem/V⌋ to every entry and
    one more to the (rem mod V) largest (ties: lower id), or, for rem < 0, take one from the −rem largest.
    The keys (f, −id) are unique, so exactly r of them lie at or above the r-th largest."""
    v = row.shape[0]
    q, r = divmod(rem, v) if rem > 0 else (0, -rem)
    if r:
        key = row * v + np.arange(v - 1, -1, -1, dtype=np.int64)  # the lower id wins a tie
        top = key >= np.partition(key, v - r)[v - r]  # [V] bool, r entries set
        if rem > 0:
            row += top
        else:
            row -= top
    if q:
        row += q


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
            from alignlab.exfil.quantlinear import int4_linears

            int4_linears(self.model)
        from alignlab.exfil.llama_step import lean_weights

        self._lean = lean_weights(self.model)  # None: the model's own forward (kvstep.HFStep)
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

        from alignlab.exfil.kvstep import make_stepper

        if self._cache is None:
            self._cache = make_stepper(self.model, self._rows, self.wctx, self._lean)
        if self.max_positions is not None and self._pos >= self.max_positions:
            raise AlignlabError(f"a stream passed this model's {self.max_positions} learned positions; code the "
                                "input in more streams (--streams) or use a model with rotary positions")
        feed = self._feed + [self.pad_id] * (self._rows - self.n_streams)  # padding rows: never read
        with torch.inference_mode():
            logits = self._cache.forward(feed, self._pos)  # [rows, V]
        self._cached += 1
        return quantize_rows(logits[:self.n_streams].numpy())  # [B, V]

    def advance(self, tokens: list[int]) -> None:
        """Append one token to every stream (the forward for it runs lazily, on the next query)."""
        if len(tokens) != self.n_streams:
            raise AlignlabError(f"advance: expected {self.n_streams} tokens (one per stream), got {len(tokens)}")
        self.frequencies()  # the pending tokens must enter the cache before new ones are queued
        self._pos += 1
        self._feed = list(tokens)
        self._freqs = None
        if self._cached >= self.wctx:  # full: keep the sink and the newest W_ctx/2 − 1 entries
            self._cache.slide(self.wctx // 2 - 1)
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
