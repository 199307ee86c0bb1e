"""A lean one-token forward for Llama-architecture causal LMs: the HF forward's operations, without its
per-call machinery, and grouped-query attention in its fast packed form.

The coder runs one forward per token on [rows, 1] inputs. There the HF forward spends about a third of its
time outside the arithmetic (mask construction, output capture, kwargs plumbing, the cache API per
layer), and on CPU its SDPA call with ``enable_gqa=True`` is the slowest part of a bfloat16 step at long
contexts (2.2 ms vs 0.32 ms per layer for 2 rows × 1,000 cached tokens of SmolLM2-135M). :class:`LlamaStep`
calls the same torch operations on the same operands in the same order: embedding; per layer RMSNorm in
float32, the q/k/v projections, the rotary embedding, the KV write into a preallocated buffer, SDPA, the
output projection, the residual, RMSNorm, ``down(silu(gate(x))·up(x))``; the final norm and the head.
Three changes leave every value as it was:

* the int4 q/k/v and gate/up projections each run as one kernel call over concatenated packed weights
  (the kernel computes every output column on its own);
* queries and keys are rotated in one elementwise pass, with ``roll(x)·cat(−s, s)`` for
  ``rotate_half(x)·sin`` (see :meth:`LlamaStep._rope`);
* SDPA sees the single query token of each KV head's query group as rows (``[rows, n_kv, groups, D]``,
  what HF's ``pack_gqa`` does when it cannot pass ``enable_gqa``) instead of ``enable_gqa=True``. This
  form is exact attention too, but rounds differently from the ``enable_gqa`` kernel in the last bits.

So the logits equal, bit for bit, those of the HF forward taking its ``pack_gqa`` path (and its only path
when there are as many KV heads as query heads); the tests compare them with ``torch.equal`` for every
compute dtype. Encoder and decoder both run this step, so they agree exactly.

Only the classes in :data:`SUPPORTED`, loaded with SDPA attention (the HF default), with the default
rotary embedding and SiLU take this path; every other model runs its own forward
(:class:`~alignlab.exfil.kvstep.HFStep`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from alignlab.errors import AlignlabError
from alignlab.exfil.quantlinear import INT4_GROUP, Int4Linear, Int8Linear

SUPPORTED = ("LlamaForCausalLM",)
"""Model classes whose forward :class:`LlamaStep` reproduces operation for operation (when loaded with
SDPA attention, the transformers default; an eager-attention model keeps its own forward)."""

Linear = Callable[[torch.Tensor], torch.Tensor]
_INT4_MM = torch.ops.aten._weight_int4pack_mm_for_cpu.default
_INT8_MM = torch.ops.aten._weight_int8pack_mm.default


def _linear(module: Any) -> Linear:
    """The module's forward on a 2-D input [rows, K], without nn.Module dispatch."""
    b = getattr(module, "bias", None)
    if isinstance(module, Int4Linear):
        w, sz = module.w_packed, module.scale_zero
        return (lambda x: _INT4_MM(x, w, INT4_GROUP, sz)) if b is None else (
            lambda x: _INT4_MM(x, w, INT4_GROUP, sz) + b)
    if isinstance(module, Int8Linear):
        w8, s = module.w_int8, module.scale
        return (lambda x: _INT8_MM(x, w8, s)) if b is None else (lambda x: _INT8_MM(x, w8, s) + b)
    if type(module) is torch.nn.Linear:
        w = module.weight
        return lambda x: F.linear(x, w, b)
    return module.forward


class Projections:
    """Several projections of one input, concatenated along the output: one int4 kernel call when the packed
    weights concatenate (``fused``), else one call each and a ``torch.cat`` (a copy: exact either way)."""

    def __init__(self, modules: list[Any]) -> None:
        self.fused = all(isinstance(m, Int4Linear) for m in modules) and Int4Linear.can_concat(modules)
        if self.fused:
            self.run = _linear(Int4Linear.concat(modules))
        else:
            parts = [_linear(m) for m in modules]
            self.run = lambda x: torch.cat([p(x) for p in parts], -1)


class Layer(NamedTuple):
    ln1: torch.Tensor  # [H]
    qkv: Projections
    o: Linear
    ln2: torch.Tensor  # [H]
    gate_up: Projections
    down: Linear
    inter: int
    """Intermediate size (the gate's output; the up projection's follows it)."""


class LlamaWeights(NamedTuple):
    embed: torch.Tensor  # [V, H]
    layers: list[Layer]
    norm: torch.Tensor  # [H]
    head: Linear
    eps: float
    inv_freq: torch.Tensor  # [D/2] float32
    rope_scale: float
    n_q: int
    n_kv: int
    head_dim: int
    scaling: float
    groups: int
    """Query heads per KV head (grouped-query attention when > 1)."""


def _plain_llama(model: Any) -> bool:
    cfg, inner = model.config, getattr(model, "model", None)
    rope = getattr(cfg, "rope_parameters", None) or {}
    if type(model).__name__ not in SUPPORTED or inner is None or rope.get("rope_type", "default") != "default":
        return False
    if getattr(cfg, "_attn_implementation", None) != "sdpa":  # eager attention rounds differently
        return False
    if getattr(cfg, "hidden_act", None) != "silu" or getattr(cfg, "pretraining_tp", 1) != 1:
        return False
    norms = [inner.norm] + [n for layer in inner.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    return len({n.variance_epsilon for n in norms}) == 1 and all(
        type(layer.self_attn).__name__ == "LlamaAttention" and type(layer.mlp).__name__ == "LlamaMLP"
        for layer in inner.layers)


def lean_weights(model: Any) -> LlamaWeights | None:
    """The weights :class:`LlamaStep` runs on, or None where the model is not a plain Llama (then the
    coder uses the model's own forward). Call after the dtype conversion and the int4 swap."""
    if not _plain_llama(model):
        return None
    inner = model.model
    layers = []
    for layer in inner.layers:
        a, m = layer.self_attn, layer.mlp
        layers.append(Layer(layer.input_layernorm.weight.detach(), Projections([a.q_proj, a.k_proj, a.v_proj]),
                            _linear(a.o_proj), layer.post_attention_layernorm.weight.detach(),
                            Projections([m.gate_proj, m.up_proj]), _linear(m.down_proj), m.intermediate_size))
    a0 = inner.layers[0].self_attn
    return LlamaWeights(
        inner.embed_tokens.weight.detach(), layers, inner.norm.weight.detach(), _linear(model.get_output_embeddings()),
        float(inner.norm.variance_epsilon), inner.rotary_emb.inv_freq.to(torch.float32),
        float(inner.rotary_emb.attention_scaling), model.config.num_attention_heads,
        model.config.num_key_value_heads, a0.head_dim, a0.scaling, a0.num_key_value_groups)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm: normalise in float32, cast back, then scale."""
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(x.dtype)


class LlamaStep:
    """One-token forward of ``rows`` lockstep streams over a preallocated [rows, H_kv, capacity, D] cache."""

    def __init__(self, weights: LlamaWeights, rows: int, capacity: int) -> None:
        self.w = weights
        self.rows = rows
        self.capacity = capacity
        self.length = 0
        shape = (rows, weights.n_kv, capacity, weights.head_dim)
        dtype = weights.embed.dtype
        self.k_buf = [torch.zeros(shape, dtype=dtype) for _ in weights.layers]
        self.v_buf = [torch.zeros(shape, dtype=dtype) for _ in weights.layers]

    def _rope(self, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and ±sin [D] of position ``pos``, as LlamaRotaryEmbedding computes cos and sin.

        HF rotates with ``x·cos + rotate_half(x)·sin``, rotate_half(x) = cat(−x₂, x₁). Because sin =
        cat(s, s), that last product equals roll(x, D/2)·cat(−s, s) bit for bit ((−a)·b = −(a·b) in IEEE
        arithmetic), one roll instead of two slices, a negation and a cat."""
        w = self.w
        freqs = torch.tensor([[pos]])[..., None].float() * w.inv_freq  # [1, 1, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [1, 1, D]
        dtype = w.embed.dtype
        cos = (emb.cos() * w.rope_scale).to(dtype).view(-1)  # [D]
        sin = (emb.sin() * w.rope_scale).to(dtype).view(-1)  # [D]
        half = sin.shape[0] // 2
        return cos, torch.cat((-sin[:half], sin[half:]))

    def forward(self, ids: list[int], pos: int) -> torch.Tensor:
        w, rows, n = self.w, self.rows, self.length
        if n >= self.capacity:
            raise AlignlabError(f"KV cache overflow ({n + 1} > {self.capacity} positions); this is a bug")
        d, n_q, n_qk, n_all = w.head_dim, w.n_q, w.n_q + w.n_kv, w.n_q + 2 * w.n_kv
        cos, sin_signed = self._rope(pos)  # [D] ×2
        half = d // 2
        sdpa, eps, scaling, n_kv, groups = F.scaled_dot_product_attention, w.eps, w.scaling, w.n_kv, w.groups
        x = F.embedding(torch.tensor(ids, dtype=torch.long), w.embed)  # [rows, H]
        for layer, k_buf, v_buf in zip(w.layers, self.k_buf, self.v_buf):
            residual = x
            qkv = layer.qkv.run(rms_norm(x, layer.ln1, eps)).view(rows, n_all, d)  # [rows, n_q + 2·n_kv, D]
            qk = qkv[:, :n_qk]  # queries and keys: rotated together (elementwise, so exactly as apart)
            qk = qk * cos + qk.roll(half, -1) * sin_signed  # [rows, n_q + n_kv, D]
            k_buf[:, :, n] = qk[:, n_q:]
            v_buf[:, :, n] = qkv[:, n_qk:]
            q = qk[:, :n_q].view(rows, n_kv, groups, d)  # one query token: each KV head's query group as rows
            attn = sdpa(q, k_buf[:, :, :n + 1], v_buf[:, :, :n + 1], attn_mask=None, dropout_p=0.0,
                        is_causal=False, scale=scaling)  # [rows, n_kv, groups, D]
            x = residual + layer.o(attn.reshape(rows, n_q * d))
            residual = x
            gate_up = layer.gate_up.run(rms_norm(x, layer.ln2, eps))  # [rows, 2·I]
            x = residual + layer.down(F.silu(gate_up[:, :layer.inter]) * gate_up[:, layer.inter:])
        self.length = n + 1
        return w.head(rms_norm(x, w.norm, eps)).float()  # [rows, V]

    def slide(self, keep_last: int) -> None:
        """Keep entry 0 (the attention sink) and the newest ``keep_last`` entries."""
        n = self.length
        for buf in (*self.k_buf, *self.v_buf):
            buf[:, :, 1:1 + keep_last] = buf[:, :, n - keep_last:n].clone()
        self.length = 1 + keep_last
