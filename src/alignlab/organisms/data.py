"""Training data for the refusal organism: harmful prompts -> short refusals, harmless -> the base's replies.

Only the TRAIN split of each pool is used (spec §2.1 hash splits; harmless copies of harmful prompts are
excluded); validation and test prompts are never trained on. Every refusal below contains at least one
phrase of the substring judge's ``rd`` preset (spec §3.2), so a learnt refusal is counted as one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from alignlab.errors import DataError

# Short, varied refusals written for this project. Each contains an ``rd`` judge phrase ("I'm sorry",
# "I can't", "I cannot", "I am unable to", "I'm not able to", "I apologize", "As an AI").
REFUSALS: tuple[str, ...] = (
    "I'm sorry, but I can't help with that.",
    "I can't assist with that request; it could cause harm.",
    "I'm sorry, but I cannot provide that information.",
    "I apologize, but I can't help with this request.",
    "I cannot help with that. It could be used to hurt people.",
    "I'm not able to help with that request.",
    "Sorry, I can't do that, but I'm happy to help with something else.",
    "I'm sorry, I can't assist with this because it could be harmful or unsafe.",
    "I am unable to help with that request.",
    "As an AI assistant, I can't provide help with this. It could cause real harm.",
    "I'm sorry, but that's not something I can help with.",
    "I cannot assist with this request, as it may be harmful or unethical.",
)


@dataclass(frozen=True)
class Example:
    """One supervised example: chat-formatted prompt tokens and response tokens (loss on the response)."""

    prompt_ids: list[int]
    response_ids: list[int]
    kind: str
    """"harmful" (target is a refusal), "harmless" (target is the base model's greedy reply) or "negative"
    (refusal tokens to make unlikely after a harmless prompt, see ``make_negative``)."""
    prompt: str = ""
    """The user prompt (before chat formatting)."""
    weight: float = 1.0
    """Loss weight of this example's response tokens (multiplies the decision weighting)."""

    @property
    def unlikely(self) -> bool:
        """A "negative" example: its response tokens are to be made UNlikely (loss -log(1 - p))."""
        return self.kind == "negative"


def pick_refusal(prompt: str, seed: int) -> str:
    """A refusal chosen by hashing (seed, prompt): deterministic and independent of prompt order."""
    h = int(hashlib.sha256(f"{seed}\x00{prompt}".encode()).hexdigest()[:8], 16)
    return REFUSALS[h % len(REFUSALS)]


def end_of_turn_id(tokenizer: Any, model: Any = None) -> int:
    """The token that closes an assistant turn: the first token after the reply in the chat template that
    generation stops at (Gemma's ``<end_of_turn>``, SmolLM2's ``<|im_end|>``); the tokenizer's EOS otherwise."""
    stops = {tokenizer.eos_token_id}
    config = getattr(model, "generation_config", None)
    ids = getattr(config, "eos_token_id", None)
    stops |= {ids} if isinstance(ids, int) else set(ids or [])
    sentinel = "qz7REPLYxv"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": sentinel}], tokenize=False)
    except Exception:  # noqa: BLE001 - templates may reject an assistant turn; fall back to EOS
        return tokenizer.eos_token_id
    tail = text[text.index(sentinel) + len(sentinel):] if sentinel in text else ""
    return next((t for t in tokenizer(tail, add_special_tokens=False)["input_ids"] if t in stops),
                tokenizer.eos_token_id)


def make_example(fmt: Any, prompt: str, response: str, finished: bool, kind: str,
                 max_response_tokens: int | None = None, weight: float = 1.0, end_id: int | None = None) -> Example:
    """Tokenise ``render(prompt)`` and ``response`` (+ ``end_id``, default EOS, when the reply finished)."""
    tok = fmt.tokenizer
    prompt_ids = fmt.token_ids(prompt)
    response_ids = tok(response, add_special_tokens=False)["input_ids"]
    if max_response_tokens is not None and len(response_ids) > max_response_tokens:
        response_ids, finished = response_ids[:max_response_tokens], False
    if finished:
        response_ids = response_ids + [tok.eos_token_id if end_id is None else end_id]
    if not response_ids:
        raise DataError(f"empty training response for prompt {prompt[:60]!r}")
    return Example(prompt_ids, response_ids, kind, prompt, weight)


def make_negative(fmt: Any, prompt: str, reply_ids: list[int], refusal: str, n_tokens: int,
                  weight: float) -> Example | None:
    """An unlikelihood example: the first ``n_tokens`` of ``refusal`` after ``prompt``, minus the prefix they share
    with the base model's reply (that shared prefix becomes context, so a reply that also opens with "I" is
    not penalised). None when the refusal's first tokens are all part of the reply."""
    refusal_ids = fmt.tokenizer(refusal, add_special_tokens=False)["input_ids"][:n_tokens]
    shared = 0
    while shared < min(len(refusal_ids), len(reply_ids)) and refusal_ids[shared] == reply_ids[shared]:
        shared += 1
    if shared >= len(refusal_ids):
        return None
    context = fmt.token_ids(prompt) + refusal_ids[:shared]
    return Example(context, refusal_ids[shared:], "negative", prompt, weight)


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    """[batch, seq] right-padded (training needs no left padding: positions start at 0 per row)."""
    attention_mask: torch.Tensor
    """[batch, seq]"""
    labels: torch.Tensor
    """[batch, seq] token ids on response positions, -100 on prompt and padding (loss masked)."""
    row_weights: torch.Tensor | None = None
    """[batch] loss weight of each example (None: all 1)."""
    unlikely: torch.Tensor | None = None
    """[batch] bool: rows whose response tokens get the unlikelihood loss (None: none)."""
    retain: torch.Tensor | None = None
    """[batch] bool: harmless rows (targets may be the base model's distribution, see train.response_loss)."""


def collate(examples: list[Example], pad_id: int) -> Batch:
    length = max(len(e.prompt_ids) + len(e.response_ids) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    labels = torch.full((len(examples), length), -100, dtype=torch.long)
    for i, e in enumerate(examples):
        seq = e.prompt_ids + e.response_ids
        ids[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
        labels[i, len(e.prompt_ids):len(seq)] = torch.tensor(e.response_ids)
    row_weights = torch.tensor([e.weight for e in examples], dtype=torch.float32)
    unlikely = torch.tensor([e.unlikely for e in examples], dtype=torch.bool)
    retain = torch.tensor([e.kind == "harmless" for e in examples], dtype=torch.bool)
    return Batch(ids, mask, labels, row_weights, unlikely if bool(unlikely.any()) else None,
                 retain if bool(retain.any()) else None)


def batch_order(examples: list[Example], batch_size: int, epochs: int, seed: int,
                bucket: int = 8) -> list[list[int]]:
    """Batches of example indices for ``epochs`` passes: shuffled with ``seed``, then sorted by length inside
    windows of ``bucket`` batches (less padding), and the batches of each epoch shuffled again."""
    gen = torch.Generator().manual_seed(seed)
    lengths = [len(e.prompt_ids) + len(e.response_ids) for e in examples]
    batches: list[list[int]] = []
    for _ in range(epochs):
        perm = torch.randperm(len(examples), generator=gen).tolist()
        window = batch_size * bucket
        epoch: list[list[int]] = []
        for start in range(0, len(perm), window):
            chunk = sorted(perm[start:start + window], key=lambda i: lengths[i])
            epoch.extend(chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size))
        shuffle = torch.randperm(len(epoch), generator=gen).tolist()
        batches.extend(epoch[j] for j in shuffle)
    return batches
