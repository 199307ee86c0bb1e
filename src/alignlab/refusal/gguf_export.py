"""GGUF export of an edited llama-family model through the ``gguf`` package, verified by reading it back.

Tensor names follow llama.cpp's llama architecture; q/k weights get the same row permutation as
llama.cpp's converter (rotary halves interleaved), and ``read_back`` undoes it for verification. The
tokenizer is written from the fast tokenizer's BPE vocabulary and merges (GPT-2 style byte-level BPE, as
in SmolLM2, Llama-3, Qwen); other tokenizer types and models with biases are refused with a clear error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignlab.errors import AlignlabError
from alignlab.io import atomic_path
from alignlab.refusal.head import materialize

LLAMA_FAMILIES = ("llama", "mistral")
BLOCK_NAMES = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order: [n_head, 2, half, in] -> [n_head, half, 2, in]."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """HF llama state dict -> {gguf name: float32 array} in llama.cpp layout."""
    cfg = model.config
    if cfg.model_type not in LLAMA_FAMILIES:
        raise AlignlabError(f"GGUF export supports llama-family models ({', '.join(LLAMA_FAMILIES)}), "
                            f"not {cfg.model_type}; export safetensors and convert with llama.cpp")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise AlignlabError("GGUF export of llama models with biases is not supported")
    sd = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    out = {"token_embd.weight": sd["model.embed_tokens.weight"], "output_norm.weight": sd["model.norm.weight"]}
    head = materialize(model)  # a tied head kept as a correction (head.py) is exported untied
    if head is not None:
        out["output.weight"] = head.numpy()
    elif "lm_head.weight" in sd and not cfg.tie_word_embeddings:
        out["output.weight"] = sd["lm_head.weight"]
    for i in range(cfg.num_hidden_layers):
        for hf, gg in BLOCK_NAMES.items():
            w = sd[f"model.layers.{i}.{hf}"]
            if hf.startswith("self_attn.q_proj"):
                w = _permute(w, heads)
            elif hf.startswith("self_attn.k_proj"):
                w = _permute(w, kv_heads)
            out[f"blk.{i}.{gg}"] = w
    return out


def _tokenizer_fields(tokenizer: Any) -> dict[str, Any]:
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "BPE":
        raise AlignlabError(f"GGUF export needs a BPE tokenizer, not {spec['model']['type']}")
    vocab = tokenizer.get_vocab()
    tokens = [""] * (max(vocab.values()) + 1)
    for tok, i in vocab.items():
        tokens[i] = tok
    special = set(tokenizer.all_special_ids)
    types = [3 if i in special else 1 for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    return {"tokens": tokens, "types": types, "merges": merges}


def export_gguf(model: torch.nn.Module, tokenizer: Any, path: str | Path, *, f16: bool = True) -> Path:
    """Write ``model`` as a GGUF file (F16 or F32 tensors, norms always F32), atomically."""
    import gguf

    tensors = gguf_tensors(model)
    cfg = model.config
    tok = _tokenizer_fields(tokenizer)
    path = Path(path)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_name("alignlab-edited")
        w.add_block_count(cfg.num_hidden_layers)
        w.add_context_length(cfg.max_position_embeddings)
        w.add_embedding_length(cfg.hidden_size)
        w.add_feed_forward_length(cfg.intermediate_size)
        w.add_head_count(cfg.num_attention_heads)
        w.add_head_count_kv(cfg.num_key_value_heads)
        w.add_rope_freq_base(float(getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"]))
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
        w.add_vocab_size(cfg.vocab_size)
        w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(tok["tokens"])
        w.add_token_types(tok["types"])
        w.add_token_merges(tok["merges"])
        for name, attr in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "pad_token_id")):
            if getattr(tokenizer, attr) is not None:
                getattr(w, f"add_{name}_token_id")(getattr(tokenizer, attr))
        if getattr(tokenizer, "chat_template", None):
            w.add_chat_template(tokenizer.chat_template)
        for name, arr in tensors.items():
            keep32 = arr.ndim == 1 or not f16
            w.add_tensor(name, arr.astype(np.float32 if keep32 else np.float16))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def read_back(path: str | Path, model: torch.nn.Module) -> float:
    """Max |Δ| between the file's tensors (q/k un-permuted) and the model's, in the file's precision."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    expected = gguf_tensors(model)
    heads, kv_heads = model.config.num_attention_heads, model.config.num_key_value_heads
    if {t.name for t in reader.tensors} != set(expected):
        raise AlignlabError(f"{path}: tensor names differ from the model's")
    worst = 0.0
    for t in reader.tensors:
        data = np.asarray(t.data).reshape(expected[t.name].shape)
        want = expected[t.name].astype(data.dtype)
        if t.name.endswith("attn_q.weight"):
            data, want = _unpermute(data, heads), _unpermute(want, heads)
        elif t.name.endswith("attn_k.weight"):
            data, want = _unpermute(data, kv_heads), _unpermute(want, kv_heads)
        worst = max(worst, float(np.abs(data.astype(np.float64) - want.astype(np.float64)).max()))
    return worst
