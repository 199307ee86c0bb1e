"""Last-position log-probs of a batch whose rows share a token prefix, with the prefix computed once (issue 19 §2).

The selection, search and subspace stages score hundreds of interventions on the same few prompt batches, and
every intervention acts position by position (directional ablation, activation addition), so the prefix's keys
and values under an intervention do not depend on what follows: ``models.prefix_split`` runs it once as one row.
The fast path is checked once against the full forward (``ok``); a model it does not reproduce (no KV-cache
interface, a cache that cannot be repeated, a sliding window shorter than the batch) gets full forwards.
"""

from __future__ import annotations

import torch

from alignlab.models.chat import Encoded
from alignlab.models.prefix_split import common_prefix, fits_window, prefill, split_prefix
from alignlab.refusal.forward import COUNTER, last_logprobs

__all__ = ["SharedPrefix", "common_prefix"]


class SharedPrefix:
    """``last_logprobs()`` of ``enc`` (equal to ``forward.last_logprobs(model, enc)`` within float error) under
    whatever hooks are active at the call. Construct it outside any hook context: ``baseline`` is the model's
    own log-probs, computed for the check."""

    def __init__(self, model: torch.nn.Module, enc: Encoded, min_prefix: int = 4, atol: float = 1e-3) -> None:
        self.model, self.enc = model, enc
        self.split = split_prefix(enc.input_ids, enc.attention_mask, min_prefix)
        self.p = 0 if self.split is None else self.split.p
        self.baseline = last_logprobs(model, enc)  # [b, vocab]
        self.ok = (self.split is not None and fits_window(model, enc.input_ids.shape[1])
                   and self._check(atol))

    @property
    def saved_fraction(self) -> float:
        """Token positions a forward no longer computes, over those of the full left-padded batch."""
        return self.split.saved_fraction if self.ok and self.split is not None else 0.0

    def last_logprobs(self) -> torch.Tensor:
        """Float64 next-token log-softmax at the last prompt position: [batch, vocab]."""
        if not self.ok:
            return last_logprobs(self.model, self.enc)
        return self._fast()

    def _fast(self) -> torch.Tensor:
        from transformers import DynamicCache

        from alignlab.models.generate import _cache_kwarg

        assert self.split is not None
        COUNTER.forwards += 1
        with torch.no_grad():
            cache = DynamicCache(config=self.model.config)
            logits = prefill(self.model, self.split, cache, _cache_kwarg(self.model))  # [b, vocab]
        return torch.log_softmax(logits.double(), dim=-1)

    def _check(self, atol: float) -> bool:
        try:
            fast = self._fast()
        except Exception:  # noqa: BLE001 - any failure of the fast path means "use full forwards"
            return False
        return fast.shape == self.baseline.shape and bool((fast - self.baseline).abs().max() < atol)
