"""Resume a forward pass at block l from cached block inputs (spec §2.7: "run blocks l..L-1 only").

During one baseline pass a pre-hook on every block records its hidden-state input and call arguments
(attention mask, rotary embeddings, ...). ``logprobs_added(l, r)`` then adds r to the recorded input of block l
and runs blocks l..L-1, the final norm and the head on each prompt's last position only. When the prompts share
the chat template's prefix, the recorded pass runs on ``models.packing``'s padding-free packs (the prefix once per
pack), so every resumed pass computes those positions only (issue 19 §2). The fast path is verified once against
the full left-padded forward (``ok``); packs that fail it are dropped for the padded batch, and models whose head
does more than norm + unembedding (logit scaling, soft-capping) fail it too: the caller then uses full forwards.
"""

from __future__ import annotations

from typing import Any

import torch

from alignlab.models.anatomy import Anatomy, tensor_of
from alignlab.models.chat import Encoded
from alignlab.refusal.forward import COUNTER, last_logprobs

Call = tuple[torch.Tensor, tuple, dict[str, Any]]


class PrefixCache:
    def __init__(self, model: torch.nn.Module, anatomy: Anatomy, enc: Encoded, pack_tokens: int = 512,
                 baseline: torch.Tensor | None = None) -> None:
        """``baseline``: the model's last-position log-probs of ``enc`` [batch, vocab] where the caller has them
        (the fast path is checked against it), else the full left-padded forward computes them."""
        from alignlab.models.packing import window_packs

        self.model, self.anatomy, self.blocks = model, anatomy, anatomy.blocks
        self.batch = int(enc.input_ids.shape[0])
        self.baseline = last_logprobs(model, enc) if baseline is None else baseline  # [batch, vocab] float64
        packs = window_packs(model, enc.input_ids, enc.attention_mask, pack_tokens)
        self.ok = False
        # lasts: per recorded run, the columns of its rows' last tokens (None: the padded batch's last column)
        self.lasts: list[tuple[torch.Tensor | None, list[int]]]
        if packs:
            self.runs = self._record(lambda: _packed_forwards(model, packs))
            self.lasts = [(p.last, p.rows) for p in packs]
            self.ok = self._verify()
        if not self.ok:  # the left-padded batch as one run
            self.runs = self._record(lambda: last_logprobs(model, enc))
            self.lasts = [(None, list(range(self.batch)))]
            self.ok = self._verify()

    def _record(self, forward: Any) -> list[list[Call]]:
        """Block inputs of every forward ``forward()`` makes: one list of per-block calls per forward."""
        calls: list[Call] = []

        def record(module, args, kwargs):
            hidden = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs["hidden_states"]
            rest = args[1:] if args and isinstance(args[0], torch.Tensor) else args
            kw = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            calls.append((hidden.detach(), rest, kw))

        handles = [block.register_forward_pre_hook(record, with_kwargs=True) for block in self.blocks]
        try:
            forward()
        finally:
            for handle in handles:
                handle.remove()
        n = len(self.blocks)
        if n == 0 or len(calls) % n:
            return []
        return [calls[i:i + n] for i in range(0, len(calls), n)]

    def logprobs_added(self, layer: int, direction: torch.Tensor) -> torch.Tensor:
        """Activation addition at resid_pre[layer] (every position): float64 last-position log-probs
        [batch, vocab], running blocks layer..L-1 only."""
        COUNTER.forwards += 1
        out: torch.Tensor | None = None
        with torch.no_grad():
            for run, (last, rows) in zip(self.runs, self.lasts):
                h = run[layer][0]
                h = (h.float() + direction.to(h.device)).to(h.dtype)
                for index in range(layer, len(self.blocks)):
                    _, args, kwargs = run[index]
                    h = tensor_of(self.blocks[index](h, *args, **kwargs))
                logits = self._head(h, last)  # [k, vocab]
                if out is None:
                    out = logits.new_empty((self.batch, logits.shape[-1]))
                out[torch.tensor(rows, device=out.device)] = logits
        assert out is not None
        return torch.log_softmax(out.double(), dim=-1)

    def _head(self, h: torch.Tensor, last: torch.Tensor | None) -> torch.Tensor:
        if last is None:  # left-padded batch: every row's last column
            return self.anatomy.unembedding(self.anatomy.final_norm(h[:, -1:, :]))[:, -1, :]
        picked = h[:, last.to(h.device), :]  # [1, k, d]
        return self.anatomy.unembedding(self.anatomy.final_norm(picked))[0]

    def _verify(self) -> bool:
        if not self.runs:
            return False
        try:
            zero = torch.zeros(self.runs[0][0][0].shape[-1])
            again = self.logprobs_added(0, zero)
        except Exception:  # noqa: BLE001 - any failure of the fast path means "use full forwards"
            return False
        return again.shape == self.baseline.shape and bool((again - self.baseline).abs().max() < 1e-3)


def _packed_forwards(model: torch.nn.Module, packs: list) -> None:
    from alignlab.models.packing import packed_last_logits

    with torch.no_grad():
        packed_last_logits(model, packs, sum(len(p.rows) for p in packs))
