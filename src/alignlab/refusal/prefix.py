"""Resume a forward pass at block l from cached block inputs (spec §2.7: "run blocks l..L-1 only").

During one baseline pass a pre-hook on every block records its hidden-state input and call arguments
(attention mask, rotary embeddings, ...). ``logprobs_from(l, h)`` then runs blocks l..L-1, the final
norm and the head on the last position only. The fast path is verified once against the full forward
(``ok``); models whose head does more than norm + unembedding (logit scaling, soft-capping) fail that
check and the caller falls back to full forwards.
"""

from __future__ import annotations

from typing import Any

import torch

from alignlab.models.anatomy import Anatomy, tensor_of
from alignlab.models.chat import Encoded
from alignlab.refusal.forward import COUNTER, last_logprobs


class PrefixCache:
    def __init__(self, model: torch.nn.Module, anatomy: Anatomy, enc: Encoded) -> None:
        self.model = model
        self.anatomy = anatomy
        self.blocks = anatomy.blocks
        self.calls: list[tuple[torch.Tensor, tuple, dict[str, Any]]] = []
        handles = []

        def record(module, args, kwargs):
            hidden = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs["hidden_states"]
            rest = args[1:] if args and isinstance(args[0], torch.Tensor) else args
            kw = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            self.calls.append((hidden.detach(), rest, kw))

        for block in self.blocks:
            handles.append(block.register_forward_pre_hook(record, with_kwargs=True))
        try:
            self.baseline = last_logprobs(model, enc)  # [batch, vocab] float64
        finally:
            for handle in handles:
                handle.remove()
        self.ok = len(self.calls) == len(self.blocks) and self._verify()

    def hidden(self, layer: int) -> torch.Tensor:
        """Cached resid_pre[layer]: [batch, seq, d]"""
        return self.calls[layer][0]

    def logprobs_from(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Run blocks layer..L-1 on ``hidden`` [batch, seq, d]; float64 last-position log-probs [batch, vocab]."""
        COUNTER.forwards += 1
        h = hidden
        with torch.no_grad():
            for index in range(layer, len(self.blocks)):
                _, args, kwargs = self.calls[index]
                h = tensor_of(self.blocks[index](h, *args, **kwargs))
            last = self.anatomy.final_norm(h[:, -1:, :])
            logits = self.anatomy.unembedding(last)[:, -1, :]
        return torch.log_softmax(logits.double(), dim=-1)

    def _verify(self) -> bool:
        try:
            again = self.logprobs_from(0, self.hidden(0))
        except Exception:  # noqa: BLE001 - any failure of the fast path means "use full forwards"
            return False
        return bool((again - self.baseline).abs().max() < 1e-3)
