"""A tied unembedding kept exact after an in-place edit of its embedding, without a second copy (issue 19 §3).

Orthogonalising a tied model edits the embedding E [vocab, d] in place: E' = E - Σ_k c_k r_kᵀ with c_k = E r_k.
The head must stay E (the final norm's gain re-creates an r-component, so an edited head changes the logits).
Untying by cloning costs vocab x d more memory (0.22x of SmolLM2's weights). Instead, the head keeps sharing E'
and a forward hook adds the rank-k difference back:

    logits = h E'ᵀ + (h R) Cᵀ = h (E' + C R)ᵀ ≈ h Eᵀ     (R = [r_k] [k, d], C = [c_k] [vocab, k])

equal to the untied head up to float rounding. Only float32/float64 weights take this form (the edit is exact
in place there; a half-precision E' is rounded, and E' + C R would miss E by that rounding), others are untied
by a clone as before. The export writes the head E' + C R computed a block of rows at a time
(``head_rows``), as its own safetensors shard, so no copy exists at any point.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

ATTR = "_alignlab_head_correction"
ROWS = 4096
"""Rows of the head computed at a time by ``head_rows`` (9 MiB at d = 576 in float32)."""


class HeadCorrection:
    """The rank-k term that turns the edited, still tied, embedding back into the model's head."""

    def __init__(self, head: nn.Module, embedding: nn.Module) -> None:
        self.head, self.embedding = head, embedding
        self.rs: list[torch.Tensor] = []  # [d] each
        self.cs: list[torch.Tensor] = []  # [vocab] each
        self._factors: tuple[torch.Tensor, torch.Tensor] | None = None
        self.handle = head.register_forward_hook(self._hook)

    def add(self, r: torch.Tensor, c: torch.Tensor) -> None:
        """Record one rank-1 edit E <- E - c rᵀ of the shared weight."""
        self.rs.append(r.detach().clone())
        self.cs.append(c.detach().clone())
        self._factors = None

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """R [k, d] and C [vocab, k], stacked once per edit (the hook runs at every decoding step)."""
        if self._factors is None:
            self._factors = torch.stack(self.rs), torch.stack(self.cs, dim=1)
        return self._factors

    def _hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if not self.rs:
            return output
        R, C = self.factors()
        h = args[0]  # [..., d]
        coef = h.to(R.dtype) @ R.T  # [..., k]
        flat = coef.reshape(-1, coef.shape[-1])  # [n, k]
        if output.requires_grad or output.dtype != C.dtype:
            return output + (flat @ C.T).reshape(output.shape).to(output.dtype)
        out2d = output.view(-1, output.shape[-1])  # [n, vocab], in place: no second logits tensor
        out2d.addmm_(flat, C.T)
        return output

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows start:stop of the effective head E' + C R [stop - start, d]."""
        R, C = self.factors()
        weight = self.embedding.weight.detach()
        return torch.addmm(weight[start:stop], C[start:stop], R)

    def remove(self) -> None:
        self.handle.remove()


def attached(model: nn.Module) -> HeadCorrection | None:
    """The correction attached to ``model``, with or without recorded edits yet."""
    return getattr(model, ATTR, None)


def attach(model: nn.Module, head: nn.Module, embedding: nn.Module) -> HeadCorrection:
    """The model's correction, created (and its hook registered) on first use."""
    corr = attached(model)
    if corr is None:
        corr = HeadCorrection(head, embedding)
        setattr(model, ATTR, corr)
    return corr


def correction(model: nn.Module) -> HeadCorrection | None:
    """The model's correction once an edit was recorded in it, else None."""
    corr = attached(model)
    return corr if corr is not None and corr.rs else None


def head_rows(corr: HeadCorrection) -> Iterator[torch.Tensor]:
    """The effective head in consecutive blocks of ``ROWS`` rows."""
    vocab = corr.embedding.weight.shape[0]
    for start in range(0, vocab, ROWS):
        yield corr.rows(start, min(start + ROWS, vocab))


def head_key(model: nn.Module, corr: HeadCorrection) -> str:
    """The state-dict key of the corrected head's weight."""
    return next(f"{name}.weight" if name else "weight" for name, module in model.named_modules(remove_duplicate=False)
                if module is corr.head)


def materialize(model: nn.Module) -> torch.Tensor | None:
    """The whole effective head (a vocab x d tensor: only for exports that need it in memory, e.g. GGUF)."""
    corr = correction(model)
    return None if corr is None else torch.cat(list(head_rows(corr)))


__all__ = ["ATTR", "HeadCorrection", "attach", "attached", "correction", "head_key", "head_rows", "materialize"]
