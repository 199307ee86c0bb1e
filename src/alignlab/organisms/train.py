"""The LoRA training loop: AdamW on the adapter factors, loss on response tokens only.

Deterministic under a seed on a fixed machine and thread count: the adapter's A init, the batch order and
nothing else are random (no dropout), and every random draw goes through a seeded ``torch.Generator``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from alignlab.errors import AlignlabError
from alignlab.organisms.data import Example, batch_order, collate
from alignlab.organisms.lora import lora_modules


@dataclass(frozen=True)
class LoopConfig:
    steps: int
    batch_size: int
    lr: float
    warmup: int
    seed: int
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    first_k: int = 0
    """Response tokens per example that get ``first_weight`` in the loss."""
    first_weight: float = 1.0
    retain: bool = False
    """Harmless rows learn the base model's full next-token distribution (adapters off), not its greedy token."""
    bf16: bool = False
    """Autocast matmuls to bfloat16 (CPU AMX / GPU); the adapter and optimiser stay float32."""


@dataclass(frozen=True)
class TrainResult:
    losses: list[float]
    """Mean response-token loss of each step."""
    seconds: float
    steps: int
    epochs: float


def lr_at(step: int, cfg: LoopConfig) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to 10 % of ``lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac))))


def _response_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     keep: torch.Tensor) -> torch.Tensor:
    """[n_response, vocab] logits at the positions whose next token is a response token. Only those positions
    go through the unembedding (~20 % of SmolLM2's forward), unless the model rescales or soft-caps logits."""
    cfg = model.config
    plain_head = not any(getattr(cfg, k, None) for k in ("final_logit_softcapping", "logits_scaling"))
    if plain_head and hasattr(model, "get_decoder") and model.get_output_embeddings() is not None:
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return model.get_output_embeddings()(hidden[:, :-1][keep])
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][keep]


def _token_weights(keep: torch.Tensor, first_k: int, first_weight: float,
                   row_weights: torch.Tensor | None) -> torch.Tensor:
    weights = torch.ones_like(keep, dtype=torch.float32)  # [batch, seq-1]
    if first_k > 0:
        position = keep.long().cumsum(dim=1) - 1  # index of each target within its response
        weights = torch.where(position < first_k, torch.full_like(weights, first_weight), weights)
    if row_weights is not None:
        weights = weights * row_weights.to(weights.device)[:, None]
    return weights[keep]  # [n_response]


def response_loss(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  labels: torch.Tensor, first_k: int = 0, first_weight: float = 1.0,
                  row_weights: torch.Tensor | None = None, unlikely: torch.Tensor | None = None,
                  retain: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean next-token loss over positions whose target is a response token.

    Cross-entropy against the label by default. The first ``first_k`` response tokens of each row weigh
    ``first_weight`` (the refuse-or-answer decision is made there); ``row_weights`` ([batch]) scales every token
    of a row. Rows flagged in ``unlikely`` ([batch] bool) get the unlikelihood loss -log(1 - p(label))
    (Welleck et al. 2019); rows flagged in ``retain`` get cross-entropy against the model's own distribution
    with its LoRA adapters switched off (= KL to the base model plus a constant), a richer "keep behaving
    like the base" signal than its greedy token.
    """
    targets = labels[:, 1:]  # [batch, seq-1]
    keep = targets != -100
    weights = _token_weights(keep, first_k, first_weight, row_weights)  # [n_response]
    logits = _response_logits(model, input_ids, attention_mask, keep).float()  # [n_response, vocab]
    losses = nn.functional.cross_entropy(logits, targets[keep], reduction="none")  # [n_response]
    if unlikely is not None:
        rows = unlikely.to(keep.device)[:, None].expand_as(keep)[keep]  # [n_response]
        p = torch.exp(-losses).clamp(max=1.0 - 1e-6)
        losses = torch.where(rows, -torch.log1p(-p), losses)
    if retain is not None:
        from alignlab.organisms.lora import adapters_disabled

        rows = retain.to(keep.device)[:, None].expand_as(keep)[keep]  # [n_response]
        with torch.no_grad(), adapters_disabled(model):
            base = _response_logits(model, input_ids, attention_mask, keep)[rows].float().softmax(-1)
        soft = -(base * logits[rows].log_softmax(-1)).sum(-1)  # [n_retain]
        losses = losses.masked_scatter(rows, soft)
    return (losses * weights).sum() / weights.sum()


def train_lora(model: Any, examples: list[Example], cfg: LoopConfig, pad_id: int,
               progress: bool = True) -> TrainResult:
    """Train the ``LoRALinear`` factors already inserted in ``model`` for ``cfg.steps`` steps."""
    from tqdm.auto import tqdm

    mods = lora_modules(model)
    if not mods:
        raise AlignlabError("no LoRA modules in the model: call apply_lora first")
    if not examples:
        raise AlignlabError("no training examples")
    params = [p for m in mods.values() for p in (m.lora_A, m.lora_B)]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(examples) / cfg.batch_size)
    order = batch_order(examples, cfg.batch_size, math.ceil(cfg.steps / per_epoch), cfg.seed)[:cfg.steps]
    device = next(model.parameters()).device
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(order, desc="train", unit="step", disable=None if progress else True)
    for step, idx in enumerate(bar):
        batch = collate([examples[i] for i in idx], pad_id)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = response_loss(model, batch.input_ids.to(device), batch.attention_mask.to(device),
                                 batch.labels.to(device), cfg.first_k, cfg.first_weight, batch.row_weights,
                                 batch.unlikely, batch.retain if cfg.retain else None)
        if not torch.isfinite(loss):
            raise AlignlabError(f"loss became {loss.item()} at step {step}: lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    return TrainResult(losses, time.perf_counter() - start, len(order), len(order) / per_epoch)
