"""Tiny randomly initialised models for every supported family, built offline from configs.

Used by the tests (and handy for users who want to try a pipeline in seconds). Sizes are distinct on
purpose (hidden 64, intermediate 96, head_dim 16, vocab 300) so that a transposed weight or a wrong axis
shows up as a shape error rather than passing by accident.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from alignlab.errors import AlignlabError

VOCAB = 300
HIDDEN = 64
INTERMEDIATE = 96
LAYERS = 3
HEADS = 4
KV_HEADS = 2

# A ChatML-style template; the tokenizer's special tokens below make its markers single tokens.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_COMMON: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "intermediate_size": INTERMEDIATE,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "head_dim": 16,
    "max_position_embeddings": 512,  # rotary: no parameter depends on it; long enough for prompt + 64 new tokens
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}


def _llama_like(**extra: Any) -> dict[str, Any]:
    return {**_COMMON, **extra}


# family -> config kwargs. Biases are switched on wherever the family allows them, heads tied where it ties.
FAMILY_CONFIGS: dict[str, Callable[[], dict[str, Any]]] = {
    "llama": lambda: _llama_like(tie_word_embeddings=True, attention_bias=True, mlp_bias=True),
    "mistral": lambda: _llama_like(tie_word_embeddings=False, sliding_window=None),
    "qwen2": lambda: _llama_like(tie_word_embeddings=True),
    "qwen3": lambda: _llama_like(tie_word_embeddings=True),
    "gemma": lambda: _llama_like(tie_word_embeddings=True),
    "gemma2": lambda: _llama_like(tie_word_embeddings=True, sliding_window=64, query_pre_attn_scalar=16),
    "gemma3_text": lambda: _llama_like(tie_word_embeddings=True, sliding_window=64, query_pre_attn_scalar=16),
    "phi3": lambda: _llama_like(tie_word_embeddings=False, pad_token_id=0),
    "olmo2": lambda: _llama_like(tie_word_embeddings=False),
    "granite": lambda: _llama_like(
        tie_word_embeddings=True, attention_bias=True, mlp_bias=True, embedding_multiplier=2.0,
        residual_multiplier=0.5, attention_multiplier=0.25, logits_scaling=3.0,
    ),
    "mixtral": lambda: _llama_like(tie_word_embeddings=False, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": lambda: _llama_like(
        tie_word_embeddings=False, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        shared_expert_intermediate_size=48, decoder_sparse_step=1,
    ),
    "gpt2": lambda: {
        "vocab_size": VOCAB, "n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS, "n_positions": 128,
        "n_inner": INTERMEDIATE, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": True,
    },
    "gpt_neox": lambda: {
        "vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE, "max_position_embeddings": 512, "bos_token_id": 1,
        "eos_token_id": 2, "tie_word_embeddings": False, "use_parallel_residual": True, "rotary_pct": 0.5,
    },
}

FAMILIES: tuple[str, ...] = tuple(FAMILY_CONFIGS)


def tiny_config(family: str, **overrides: Any) -> Any:
    """The transformers config of a tiny ``family`` model (eager attention, dropout off)."""
    from transformers import AutoConfig

    if family not in FAMILY_CONFIGS:
        raise AlignlabError(f"no tiny config for family {family!r}; known: {', '.join(FAMILIES)}")
    kwargs = {**FAMILY_CONFIGS[family](), **overrides}
    config = AutoConfig.for_model(family, **kwargs)
    config._attn_implementation = "eager"
    for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if hasattr(config, name):
            setattr(config, name, 0.0)
    return config


def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer with no merges (256 byte tokens + ChatML specials) and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_vocab = {ch: i + 8 for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    specials = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(specials)} | byte_vocab
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "</s>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_model(family: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32, **overrides: Any):
    """A tiny random ``family`` causal LM in eval mode and a matching tokenizer: ``(model, tokenizer)``."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(family, **overrides)
    tokenizer = tiny_tokenizer()
    config.eos_token_id = tokenizer.eos_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="eager")
        _randomise_norms(model, seed)
    model.eval()
    return model, tokenizer


def _randomise_norms(model: torch.nn.Module, seed: int) -> None:
    """Give norm gains and biases random values, so tests see their effect (defaults are all ones/zeros)."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1 and ("norm" in name or "ln" in name) or name.endswith(".bias"):
                param.add_(0.1 * torch.randn(param.shape, generator=gen, dtype=param.dtype))


def chaotic_model(family: str = "llama"):
    """A tiny model with larger weights: its greedy tokens vary along a row and between rows (decoding tests)."""
    model, tok = tiny_model(family, seed=3)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model, tok


def splitting_stop(model: Any, ids: torch.Tensor, mask: torch.Tensor, n_new: int) -> int:
    """A token ``model`` emits greedily in some rows of the left-padded batch but not all, so that as a stop token
    some rows finish early and others run on (decoding tests)."""
    from collections import Counter

    from alignlab.models.generate import greedy_tokens

    free = greedy_tokens(model, ids, mask, n_new, [])
    rows = [set(t[: n_new - 2]) for t, _ in free]
    counts = Counter(t for r in rows for t in r)
    partial = [t for t, c in counts.most_common() if 0 < c < len(rows)]
    return partial[0] if partial else free[0][0][1]
