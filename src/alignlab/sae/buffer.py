"""Shuffling activation rows into training batches (spec §3.3).

``ShuffleBuffer`` is the streaming mixing buffer: it fills to ``capacity`` rows, permutes them, emits the
first half as batches and refills that half with fresh rows, so every emitted batch mixes tokens from many
contexts. The order is a deterministic function of the seed and the input stream. ``TensorBatches`` serves
batches from one in-memory tensor (e.g. a whole cache kept on the GPU) with a fresh device-side permutation
per epoch and no host synchronisation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from alignlab.errors import AlignlabError


class ShuffleBuffer:
    """Iterator of ``[batch_size, d]`` fp32 batches mixed from a stream of ``[rows, d]`` chunks."""

    def __init__(self, chunks: Iterable[Tensor], batch_size: int, capacity: int = 1_000_000, seed: int = 0,
                 device: torch.device | str | None = None, drop_last: bool = True) -> None:
        if batch_size < 1 or capacity < batch_size:
            raise AlignlabError(f"shuffle buffer capacity ({capacity}) must be >= batch size ({batch_size}) >= 1")
        self.chunks, self.batch_size, self.capacity = chunks, batch_size, capacity
        self.device = torch.device(device) if device is not None else None
        self.drop_last = drop_last
        self.gen = torch.Generator().manual_seed(seed)
        self._it = self._generate()

    def __iter__(self) -> Iterator[Tensor]:
        return self

    def __next__(self) -> Tensor:
        return next(self._it)

    def skip(self, n: int) -> None:
        """Consume ``n`` batches (resume); the following batches equal those of an uninterrupted run."""
        for i in range(n):
            try:
                next(self._it)
            except StopIteration:
                raise AlignlabError(f"the activation stream ended after {i} of the {n} batches to skip") from None

    def _emit(self, rows: Tensor) -> Iterator[Tensor]:
        for start in range(0, rows.shape[0] - self.batch_size + 1, self.batch_size):
            # a copy: the buffer region is refilled after the batch is handed out
            yield rows[start : start + self.batch_size].to(torch.float32, copy=True)
        tail = rows.shape[0] % self.batch_size
        if tail and not self.drop_last:
            yield rows[rows.shape[0] - tail :].to(torch.float32, copy=True)

    def _generate(self) -> Iterator[Tensor]:
        buf: Tensor | None = None
        n = 0
        for chunk in self.chunks:
            if self.device is not None:
                chunk = chunk.to(self.device)
            if buf is None:
                buf = torch.empty(self.capacity, chunk.shape[1], dtype=chunk.dtype, device=chunk.device)
            elif chunk.shape[1] != buf.shape[1]:
                raise AlignlabError(f"activation chunk has width {chunk.shape[1]}, expected {buf.shape[1]}")
            pos = 0
            while pos < chunk.shape[0]:
                take = min(self.capacity - n, chunk.shape[0] - pos)
                buf[n : n + take] = chunk[pos : pos + take]
                n, pos = n + take, pos + take
                if n == self.capacity:
                    buf = buf[self._perm(n, buf.device)]
                    # emit the first half (a whole number of batches), keep the rest for mixing (§3.3)
                    half = max(self.batch_size, (n // 2) // self.batch_size * self.batch_size)
                    yield from self._emit(buf[:half])
                    buf[: n - half] = buf[half:n].clone()
                    n -= half
        if buf is not None and n:
            rest = buf[:n][self._perm(n, buf.device)]
            yield from self._emit(rest)

    def _perm(self, n: int, device: torch.device) -> Tensor:
        return torch.randperm(n, generator=self.gen).to(device)


class TensorBatches:
    """``steps`` batches of ``batch_size`` rows drawn without replacement (per epoch) from ``data`` [N, d].

    The permutation is drawn on ``data``'s device, so a GPU-resident cache is served without host syncs;
    batches are returned as fp32.
    """

    def __init__(self, data: Tensor, batch_size: int, steps: int, seed: int = 0) -> None:
        if data.ndim != 2 or data.shape[0] < batch_size:
            raise AlignlabError(f"need at least one batch of {batch_size} rows, got activations of shape {tuple(data.shape)}")
        self.data, self.batch_size, self.steps = data, batch_size, steps
        self.gen = torch.Generator(device=data.device).manual_seed(seed)
        self.per_epoch = data.shape[0] // batch_size
        self._i = 0
        self._perm: Tensor | None = None

    def __iter__(self) -> Iterator[Tensor]:
        return self

    def __next__(self) -> Tensor:
        if self._i >= self.steps:
            raise StopIteration
        j = self._i % self.per_epoch
        if j == 0:
            self._perm = torch.randperm(self.data.shape[0], generator=self.gen, device=self.data.device)
        assert self._perm is not None
        self._i += 1
        idx = self._perm[j * self.batch_size : (j + 1) * self.batch_size]
        return self.data.index_select(0, idx).float()

    def skip(self, n: int) -> None:
        for _ in range(n):
            next(self)
