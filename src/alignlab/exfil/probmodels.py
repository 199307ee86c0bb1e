"""The small "probability model" protocol the coder runs on, plus the two models that need no download.

A model is a deterministic state machine over token ids. The coder calls, for each position::

    total = model.total(); cum, freq = model.interval(sym)   # encoder
    sym, cum, freq = model.find(target)                      # decoder (target in [0, total))
    model.push(sym)                                          # both, identically

so encoder and decoder see the same integer frequencies by construction. ``tokenize`` returns the
ids for text mode, or ``None`` when the input cannot be tokenised losslessly (then byte mode is used).

A language model instead implements :class:`LockstepModel`: it advances several independent token
streams together, one batched forward per step, and hands back one quantised distribution per stream.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

T_BITS = 24
T = 1 << T_BITS
"""Frequency total of quantised distributions (spec §6): every token costs at most 24 bits."""


@dataclass(frozen=True)
class Fingerprint:
    """What must match between encoder and decoder (spec §6 container)."""

    name: str
    digest: bytes
    """SHA-256 of the weights and tokenizer (or of the model definition for built-in models)."""
    dtype: str
    wctx: int
    total: int
    threads: int = 0
    """Torch intra-op threads the logits were computed with (0: not applicable, integer models)."""

    def describe(self) -> str:
        threads = f", {self.threads} thread{'s' if self.threads > 1 else ''}" if self.threads else ""
        return (f"{self.name} (sha256 {self.digest.hex()[:12]}…, {self.dtype}, W_ctx {self.wctx}, "
                f"T {self.total}{threads})")


class ProbabilityModel(Protocol):
    fingerprint: Fingerprint

    def reset(self) -> None: ...
    def total(self) -> int: ...
    def interval(self, sym: int) -> tuple[int, int]: ...
    def find(self, target: int) -> tuple[int, int, int]: ...
    def push(self, sym: int) -> None: ...
    def tokenize(self, data: bytes) -> list[int] | None: ...
    def detokenize(self, ids: list[int]) -> bytes: ...
    def byte_model(self) -> ProbabilityModel: ...


class LockstepModel(Protocol):
    """A model coding ``n`` streams in lockstep (an LM: one batched forward per step)."""

    fingerprint: Fingerprint
    pad_id: int
    """Token fed to a stream that has already ended (its distribution is never used)."""

    def start(self, n_streams: int) -> None: ...
    def frequencies(self) -> np.ndarray:
        """[n_streams, V] int64 frequencies of the next token of every stream, each row summing to T."""
        ...
    def advance(self, tokens: list[int]) -> None: ...
    def tokenize(self, data: bytes) -> list[int] | None: ...
    def detokenize(self, ids: list[int]) -> bytes: ...
    def byte_model(self) -> ProbabilityModel: ...


class UniformBytes:
    """256-way uniform table: 8 bits per byte (byte mode of models without a byte fallback)."""

    fingerprint = Fingerprint("uniform-bytes", hashlib.sha256(b"uniform-bytes-v1").digest(), "int", 0, 256)

    def reset(self) -> None:
        return None

    def total(self) -> int:
        return 256

    def interval(self, sym: int) -> tuple[int, int]:
        return sym, 1

    def find(self, target: int) -> tuple[int, int, int]:
        return target, target, 1

    def push(self, sym: int) -> None:
        return None

    def tokenize(self, data: bytes) -> list[int]:
        return list(data)

    def detokenize(self, ids: list[int]) -> bytes:
        return bytes(ids)

    def byte_model(self) -> UniformBytes:
        return self


class NGramModel:
    """Adaptive order-2 token n-gram over a ``vocab``-sized alphabet (default: the 256 byte values).

    P(c | a, b) ∝ 1 + k·n_ab(c), where n_ab counts how often c followed the context (a, b) earlier in
    the same sequence: integer counts, no training data, identical on both sides. Counts live in one
    Fenwick tree per context, so interval and find cost O(log V). When a context's total would pass
    T = 2^24 its counts are halved (rounding down).
    """

    def __init__(self, vocab: int = 256, increment: int = 16) -> None:
        self.vocab = vocab
        self.k = increment
        self._top = 1 << (vocab.bit_length() - 1)
        desc = f"ngram-order2-v1 vocab={vocab} k={increment}".encode()
        self.fingerprint = Fingerprint("ngram2", hashlib.sha256(desc).digest(), "int", 2, T)
        self.reset()

    def reset(self) -> None:
        self._ctx: dict[int, tuple[list[int], list[int], list[int]]] = {}
        self._a = self._b = -1
        self._cur = self._context()

    def _context(self) -> tuple[list[int], list[int], list[int]]:
        key = (self._a + 1) * (self.vocab + 1) + (self._b + 1)
        ctx = self._ctx.get(key)
        if ctx is None:
            ctx = ([0] * (self.vocab + 1), [0] * self.vocab, [0])  # fenwick, counts, [n]
            self._ctx[key] = ctx
        return ctx

    def total(self) -> int:
        return self.vocab + self.k * self._cur[2][0]

    def interval(self, sym: int) -> tuple[int, int]:
        tree, counts, _ = self._cur
        s, i = 0, sym
        while i > 0:
            s += tree[i]
            i &= i - 1
        return sym + self.k * s, 1 + self.k * counts[sym]

    def find(self, target: int) -> tuple[int, int, int]:
        tree, counts, _ = self._cur
        pos, rem, step, k, vocab = 0, target, self._top, self.k, self.vocab
        while step:
            nxt = pos + step
            if nxt <= vocab:
                w = step + k * tree[nxt]
                if w <= rem:
                    pos, rem = nxt, rem - w
            step >>= 1
        return pos, target - rem, 1 + k * counts[pos]

    def push(self, sym: int) -> None:
        tree, counts, n = self._cur
        if self.vocab + self.k * (n[0] + 1) > T:
            self._halve(tree, counts, n)
        counts[sym] += 1
        n[0] += 1
        i, vocab = sym + 1, self.vocab
        while i <= vocab:
            tree[i] += 1
            i += i & -i
        self._a, self._b = self._b, sym
        self._cur = self._context()

    @staticmethod
    def _halve(tree: list[int], counts: list[int], n: list[int]) -> None:
        for j in range(len(counts)):
            counts[j] //= 2
        tree[:] = [0] * len(tree)
        for j, c in enumerate(counts):
            i = j + 1
            while i < len(tree):
                tree[i] += c
                i += i & -i
        n[0] = sum(counts)

    def tokenize(self, data: bytes) -> list[int]:
        return list(data)

    def detokenize(self, ids: list[int]) -> bytes:
        return bytes(ids)

    def byte_model(self) -> NGramModel:
        return self
