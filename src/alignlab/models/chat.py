"""Chat formatting and the post-instruction (end-of-instruction, EOI) positions.

The EOI tokens are every template token after the user's text and before the response. They are
found by a sentinel diff (spec §2.3): render the template with two different sentinel instructions,
check the text after each sentinel is identical (content-independent), and take the tokens whose
character offset is at or after the sentinel's end. No template strings are hard-coded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from alignlab.errors import TemplateError

SENTINELS = ("qz7SENTINELxv", "kx3SENTINELwq")
FALLBACK_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}"
    "{% else %}{{ 'Assistant: ' + message['content'] + '\n\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
MAX_MISMATCH_FRACTION = 0.02


@dataclass(frozen=True)
class Encoded:
    input_ids: torch.Tensor
    """[batch, seq] left-padded."""
    attention_mask: torch.Tensor
    """[batch, seq]"""
    kept: list[int]
    """Indices (into the instructions passed) that were encoded; the rest had a boundary mismatch."""


@dataclass(frozen=True)
class ChatFormat:
    tokenizer: Any
    system: str | None
    eoi_ids: tuple[int, ...]
    template_source: Literal["model", "file", "fallback"]
    template_hash: str

    @property
    def n_eoi(self) -> int:
        return len(self.eoi_ids)

    @property
    def eoi_text(self) -> str:
        return self.tokenizer.decode(list(self.eoi_ids))

    def render(self, instruction: str) -> str:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": instruction}
        ]
        return _apply(self.tokenizer, messages)

    def token_ids(self, instruction: str) -> list[int]:
        return self.tokenizer(self.render(instruction), add_special_tokens=False)["input_ids"]

    def check_boundary(self, instructions: list[str]) -> tuple[list[int], list[int]]:
        """Split indices into (kept, mismatched): a prompt is kept when it ends with the EOI tokens."""
        kept, bad = [], []
        n = self.n_eoi
        for i, text in enumerate(instructions):
            ids = self.token_ids(text)
            (kept if tuple(ids[-n:]) == self.eoi_ids else bad).append(i)
        return kept, bad

    def encode(self, instructions: list[str], device: torch.device | str = "cpu", strict: bool = True) -> Encoded:
        """Render and tokenise (left padding). Prompts whose end merged with the template are excluded;
        more than 2 % of them raises (``strict``)."""
        kept, bad = self.check_boundary(instructions)
        if strict and instructions and len(bad) > MAX_MISMATCH_FRACTION * len(instructions):
            examples = "; ".join(repr(instructions[i][-40:]) for i in bad[:3])
            raise TemplateError(
                f"{len(bad)}/{len(instructions)} prompts do not end with the template's post-instruction tokens "
                f"(tokeniser merged user text into the template), e.g. {examples}"
            )
        texts = [self.render(instructions[i]) for i in kept]
        if not texts:
            raise TemplateError("no prompts to encode")
        self.tokenizer.padding_side = "left"
        batch = self.tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        return Encoded(batch["input_ids"].to(device), batch["attention_mask"].to(device), kept)


def _apply(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    kwargs: dict[str, Any] = {"add_generation_prompt": True, "tokenize": False}
    try:
        return tokenizer.apply_chat_template(messages, enable_thinking=False, **kwargs)
    except TypeError:
        return tokenizer.apply_chat_template(messages, **kwargs)


def chat_format(
    tokenizer: Any,
    system: str | None = None,
    *,
    chat_template: str | Path | None = None,
    allow_fallback: bool = False,
) -> ChatFormat:
    """Build the chat format of ``tokenizer`` and find its EOI tokens by a sentinel diff."""
    source: Literal["model", "file", "fallback"] = "model"
    if chat_template is not None:
        path = Path(chat_template)
        if not path.is_file():
            raise TemplateError(f"chat template file {path} not found")
        tokenizer.chat_template = path.read_text(encoding="utf-8")
        source = "file"
    elif not getattr(tokenizer, "chat_template", None):
        if not allow_fallback:
            raise TemplateError(
                "the tokenizer has no chat template: pass --chat-template FILE (a Jinja template), "
                "or --fallback-template to use 'User: ...\\n\\nAssistant:'"
            )
        tokenizer.chat_template = FALLBACK_TEMPLATE
        source = "fallback"
    template_hash = hashlib.sha256(str(tokenizer.chat_template).encode()).hexdigest()[:16]
    probe = ChatFormat(tokenizer, system, (), source, template_hash)
    eoi = _eoi_ids(probe)
    return ChatFormat(tokenizer, system, eoi, source, template_hash)


def _eoi_ids(fmt: ChatFormat) -> tuple[int, ...]:
    tok = fmt.tokenizer
    rendered = [fmt.render(s) for s in SENTINELS]
    suffixes = []
    for sentinel, text in zip(SENTINELS, rendered):
        if text.count(sentinel) != 1:
            raise TemplateError("the chat template rewrites or repeats the user's text; cannot locate the instruction")
        suffixes.append(text[text.index(sentinel) + len(sentinel):])
    if suffixes[0] != suffixes[1]:
        raise TemplateError("the chat template's text after the instruction depends on the instruction's content")
    text = rendered[0]
    end = text.index(SENTINELS[0]) + len(SENTINELS[0])
    if not suffixes[0]:
        raise TemplateError("the chat template adds nothing after the user's text (no generation prompt)")
    if getattr(tok, "is_fast", False):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        eoi = [i for i, (start, _stop) in zip(enc["input_ids"], enc["offset_mapping"]) if start >= end]
    else:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        alone = tok(suffixes[0], add_special_tokens=False)["input_ids"]
        eoi = ids[-len(alone):] if alone else []
    if not eoi:
        raise TemplateError("could not find any post-instruction tokens in the chat template")
    full = tok(text, add_special_tokens=False)["input_ids"]
    if tok.bos_token_id is not None and full[:2] == [tok.bos_token_id] * 2:
        raise TemplateError("the rendered prompt starts with two BOS tokens (template and tokenizer both add one)")
    return tuple(eoi)


def context_length(model: Any) -> int | None:
    """The model's maximum sequence length from its config (None when the config does not say)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_context(fmt: ChatFormat, model: Any, prompts: dict[str, list[str]], reserve: int = 0) -> None:
    """Refuse (one line, naming the set and prompt) any prompt whose rendered tokens plus ``reserve`` new tokens
    exceed the model's context. We refuse rather than truncate: a truncated prompt loses its end, and with it
    the post-instruction tokens every refusal measurement reads."""
    limit = context_length(model)
    if limit is None:
        return
    for name, texts in prompts.items():
        for i, text in enumerate(texts):
            n = len(fmt.token_ids(text))
            if n + reserve > limit:
                raise TemplateError(
                    f"{name} prompt #{i + 1} ({text[:40]!r}...) is {n} tokens with the chat template; with "
                    f"{reserve} new tokens that exceeds the model's context of {limit}: shorten or remove it"
                )
