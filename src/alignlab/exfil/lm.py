"""Language-model probability model: logits -> integer frequencies, one computation path (spec §6).

Encoder and decoder run exactly the same sequence of forward calls: the start token plus every coded
token is fed one at a time through the KV cache (float32, CPU, one intra-op thread, deterministic
algorithms). When the context reaches W_ctx tokens, both sides drop the cache and recompute the last
W_ctx/2 tokens from scratch in one call, then continue step by step. Cached and uncached results are
never mixed for the same position, so both sides see bit-identical logits.
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
DEFAULT_WCTX = 1024


def quantize(logits: np.ndarray, total: int = T) -> np.ndarray:
    """Integer frequencies f = floor(p·(T − V)) + 1 summing to ``total`` (spec §6).

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
    """A Hugging Face causal LM as a :class:`~alignlab.exfil.probmodels.ProbabilityModel`."""

    def __init__(self, model: Any, tokenizer: Any, name: str, wctx: int = DEFAULT_WCTX) -> None:
        import torch

        if wctx < 4:
            raise AlignlabError(f"wctx: must be >= 4 tokens, got {wctx}")
        self.model = model.to(device="cpu", dtype=torch.float32).eval()
        self.tokenizer = tokenizer
        self.wctx = wctx
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.start_id = int(start if start is not None else 0)
        self.fingerprint = Fingerprint(name, model_digest(self.model, tokenizer), "float32", wctx, T)
        self.reset()

    def reset(self) -> None:
        self._ctx: list[int] = [self.start_id]
        self._feed: list[int] = [self.start_id]
        self._cache: Any = None
        self._f: np.ndarray | None = None
        self._cum: np.ndarray | None = None

    def _ensure(self) -> None:
        if self._cum is not None:
            return
        import torch

        with deterministic_torch():
            out = self.model(input_ids=torch.tensor([self._feed]), cache=self._cache, use_cache=True)
        self._cache = out.cache
        f = quantize(out.logits[0, -1].float().numpy())  # [V]
        self._f = f
        self._cum = np.concatenate([[0], np.cumsum(f)])  # [V + 1]

    def total(self) -> int:
        return T

    def interval(self, sym: int) -> tuple[int, int]:
        self._ensure()
        assert self._f is not None and self._cum is not None
        if not 0 <= sym < len(self._f):
            raise AlignlabError(f"token id {sym} is outside the model's vocabulary of {len(self._f)}")
        return int(self._cum[sym]), int(self._f[sym])

    def find(self, target: int) -> tuple[int, int, int]:
        self._ensure()
        assert self._f is not None and self._cum is not None
        sym = int(np.searchsorted(self._cum, target, side="right")) - 1
        return sym, int(self._cum[sym]), int(self._f[sym])

    def push(self, sym: int) -> None:
        self._ctx.append(sym)
        if len(self._ctx) >= self.wctx:
            self._ctx = self._ctx[-(self.wctx // 2):]
            self._cache = None
            self._feed = list(self._ctx)
        else:
            self._feed = [sym]
        self._f = self._cum = None

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


def load_reference_lm(spec: str = DEFAULT_LM, wctx: int = DEFAULT_WCTX) -> LMProbabilityModel:
    """Load ``spec`` (embedded name, HF id, directory or .gguf) through ``alignlab.models.load_model``."""
    from alignlab.models import load_model

    lm = load_model(spec, device="cpu", dtype="float32")
    return LMProbabilityModel(lm.model, lm.tokenizer, spec, wctx)
