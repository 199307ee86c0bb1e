"""The weight edit as a PEFT LoRA adapter (issue 13 §4): one rank-1 delta per edited residual writer.

The edit ``W <- W - w·r̂(r̂ᵀW)`` of a writer ``y = Wx + b`` (W [d, in]) is the rank-1 update ``ΔW = B A``
with ``B = -w·r̂`` [d, 1] and ``A = r̂ᵀW`` [1, in]; PEFT adds ``lora_B(lora_A(x))·α/r`` with α = r = 1.
An embedding E [vocab, d] loses ``w·(Er̂)r̂ᵀ``: PEFT's embedding LoRA adds ``(BA)ᵀ`` with ``B = -w·r̂``
[d, 1], ``A = (Er̂)ᵀ`` [1, vocab]. A writer's bias ``b - w(r̂·b)r̂`` cannot be a LoRA product, so the
edited bias vector itself goes into the adapter (PEFT ``bias="lora_only"``; loading it overwrites the base
bias, as PEFT does for any bias-carrying adapter). A tied head stays as it was, as in ``edit.orthogonalize``:
the embedding LoRA wraps only the input lookup, and the head keeps reading the unedited shared weight.

Fused MoE experts (one [experts, ., .] parameter) go through PEFT's ``target_parameters``: expert e gets
``B[:, e] A[e]``. Behind a post-sublayer norm with gain γ (Gemma-2/3, OLMo-2; policy ``approximate``) the
edit ``W <- Γ⁻¹PΓW`` is rank-1 as well: ``B = -w·r̂/γ``, ``A = (γ∘r̂)ᵀW``. Refused with a clear error (use
the merged export): ``norm_preserve`` (not rank-1) and fused experts with biases (PEFT cannot carry them).
Whatever the case, the run reloads the adapter and fails if it does not reproduce the merged edit.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from alignlab.errors import AlignlabError
from alignlab.io import atomic_dir, write_json_atomic
from alignlab.models.anatomy import Anatomy, BlockMap, Writer, map_model

PROVENANCE = "alignlab_provenance.json"


@dataclass(frozen=True)
class LoraFactor:
    """One writer's rank-1 delta ``ΔW = B A`` in PEFT's layout (and its edited bias, if it has one)."""

    name: str
    kind: Literal["linear", "conv1d", "embedding", "experts3d"]
    A: torch.Tensor
    """[1, in] (embedding: [1, vocab]; experts3d: [experts, in]), float64."""
    B: torch.Tensor
    """[d, 1] (experts3d: [d, experts]), float64."""
    bias: torch.Tensor | None
    """The edited bias [d] (float64), or None when the writer has no bias."""
    d_axis: int = 0
    """For ``experts3d``: the axis of the parameter that has size d (1: [E, d, in]; 2: [E, in, d])."""


@dataclass(frozen=True)
class LoraPlan:
    factors: tuple[LoraFactor, ...]
    weights: dict[str, float]
    """Per-module ablation weight w used (every edited module, defaults included)."""
    postnorm: str = "approximate"
    """The edit's policy for writers behind a post-sublayer norm (``EditConfig.postnorm``)."""

    @property
    def target_modules(self) -> list[str]:
        return [f.name for f in self.factors if f.kind != "experts3d"]

    @property
    def target_parameters(self) -> list[str]:
        return [f.name for f in self.factors if f.kind == "experts3d"]

    @property
    def has_bias(self) -> bool:
        return any(f.bias is not None for f in self.factors)


def check_lora_exportable(anatomy: Anatomy, norm_preserve: str = "none", postnorm: str = "approximate") -> None:
    """Raise :class:`AlignlabError` when the edit of this model is not a sum of rank-1 LoRA deltas."""
    if norm_preserve != "none":
        raise AlignlabError(f"--export-lora needs the plain projection (norm_preserve=none, got {norm_preserve!r}): "
                            "a norm-preserving edit is not rank-1; use the merged export")
    if postnorm == "refuse" and anatomy.norm_placement != "pre":
        raise AlignlabError("this model has norms after its sublayers and --postnorm refuse forbids the weight edit")
    fused = [w.name for w in anatomy.writers() if w.kind == "experts3d" and w.has_bias]
    if fused:
        raise AlignlabError(f"--export-lora cannot carry the biases of fused experts ({fused[0]} and "
                            f"{len(fused) - 1} more): use the merged export")


def writer_weights(anatomy: Anatomy, layer_weights: Any | None) -> dict[str, float] | None:
    """Module name -> w from per-layer weights (``refusal.weights.LayerWeights``: ``embed`` and
    ``of(role, layer)``); None (full ablation) stays None."""
    if layer_weights is None:
        return None
    out = {n: float(layer_weights.embed) for n in (anatomy.embedding_name, anatomy.position_embedding_name) if n}
    for block in anatomy.block_maps:
        out.update({w.name: float(layer_weights.of(w.role, block.index)) for w in block.writers})
    return out


class _Vectors(NamedTuple):
    write: torch.Tensor
    """u [d]: the output direction of the delta."""
    read: torch.Tensor
    """v [d]: ΔW = -w·u(vᵀW), Δb = -w·(v·b)u."""


def _vectors(anatomy: Anatomy, block: BlockMap, role: str, r: torch.Tensor, postnorm: str) -> _Vectors:
    """As ``edit.orthogonalize``: u = v = r̂, or behind a post-sublayer norm with gain γ (policy approximate)
    W <- W - Γ⁺r̂(r̂ᵀΓW), i.e. u = Γ⁺r̂, v = γ∘r̂ (Γ⁺: 1/γ on the coordinates whose gain is not near 0)."""
    from alignlab.refusal.edit import inverse_gain, norm_gain

    post = block.post_attn_norm if role == "attn" else block.post_mlp_norm
    if post is None or postnorm == "naive":
        return _Vectors(r, r)
    gamma = norm_gain(anatomy.module(post), anatomy.d_model).to(r)
    return _Vectors(r * inverse_gain(gamma), gamma * r)


def _writer_factor(model: nn.Module, writer: Writer, vec: _Vectors, w: float) -> LoraFactor:
    if writer.kind == "experts3d":
        We = model.get_parameter(writer.name).detach().double().movedim(writer.d_axis, 1)  # [E, d, in]
        A = torch.einsum("d,edi->ei", vec.read, We)  # row e: vᵀW_e
        B = (-w * vec.write)[:, None].expand(-1, We.shape[0]).contiguous()  # [d, E]
        return LoraFactor(writer.name, "experts3d", A, B, None, writer.d_axis)
    module = model.get_submodule(writer.name)
    W = module.weight.detach().double()
    W = W.T if writer.kind == "conv1d" else W  # Conv1D stores [in, d]; W is now [d, in]
    b = module.bias.detach().double() if writer.has_bias else None
    bias = None if b is None else b - w * (vec.read @ b) * vec.write
    return LoraFactor(writer.name, writer.kind, (vec.read @ W)[None, :], -w * vec.write[:, None], bias)


def lora_factors(model: nn.Module, direction: torch.Tensor, weights: Mapping[str, float] | None = None,
                 anatomy: Anatomy | None = None, postnorm: str = "approximate") -> LoraPlan:
    """The rank-1 factors of ``W <- W - w·r̂(r̂ᵀW)`` for every residual writer and embedding of ``model``
    (unedited). ``weights`` maps a writer or embedding module name to w (default 1.0); w = 0 skips it.
    ``postnorm`` is the edit's policy for writers behind a post-sublayer norm (``EditConfig.postnorm``)."""
    anatomy = anatomy or map_model(model)
    check_lora_exportable(anatomy, postnorm=postnorm)
    if direction.shape != (anatomy.d_model,) or not torch.isfinite(direction).all():
        raise AlignlabError(f"direction must be a finite vector of width {anatomy.d_model}, got {tuple(direction.shape)}")
    r = direction.double() / direction.double().norm().clamp_min(1e-8)  # as edit.orthogonalize: exactly unit
    embeddings = [n for n in (anatomy.embedding_name, anatomy.position_embedding_name) if n]
    writers = [w.name for w in anatomy.writers()]
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(embeddings) - set(writers))
    if unknown:
        raise AlignlabError(f"ablation weights name modules that are not residual writers: {', '.join(unknown[:3])}")
    used = {name: float(weights.get(name, 1.0)) for name in [*embeddings, *writers]}
    factors = []
    with torch.no_grad():
        for name in embeddings:
            if used[name] != 0.0:
                E = model.get_submodule(name).weight.detach().double()  # [vocab, d]
                factors.append(LoraFactor(name, "embedding", (E @ r)[None, :], -used[name] * r[:, None], None))
        for block in anatomy.block_maps:
            for writer in block.writers:
                if used[writer.name] != 0.0:
                    vec = _vectors(anatomy, block, writer.role, r, postnorm)
                    factors.append(_writer_factor(model, writer, vec, used[writer.name]))
    return LoraPlan(tuple(factors), used, postnorm)


def _lora_config(plan: LoraPlan, base_model: str | None) -> Any:
    from peft import LoraConfig

    fan_in_fan_out = any(f.kind == "conv1d" for f in plan.factors)
    return LoraConfig(r=1, lora_alpha=1, lora_dropout=0.0, target_modules=plan.target_modules,
                      target_parameters=plan.target_parameters or None,
                      bias="lora_only" if plan.has_bias else "none", fan_in_fan_out=fan_in_fan_out,
                      init_lora_weights=False, base_model_name_or_path=base_model)


def _param_wrapper(inner: nn.Module, f: LoraFactor) -> nn.Module:
    """PEFT's ``ParamWrapper`` around the fused expert parameter ``f.name``, its layout checked against
    ``f.d_axis`` (PEFT infers in/out itself; a square parameter could otherwise be read transposed)."""
    container, _, pname = f.name.rpartition(".")
    layer = inner.get_submodule(container)
    while getattr(layer, "parameter_name", pname) != pname:  # wrappers nest when a module has several targets
        layer = layer.base_layer
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    swapped = bool(getattr(layer, "_did_swap_in_out_features", False))
    if (1 if swapped else 2) != f.d_axis or tuple(A.shape) != tuple(f.A.shape) or tuple(B.shape) != tuple(f.B.shape):
        raise AlignlabError(f"{f.name}: PEFT reads this fused expert parameter in another layout "
                            f"(lora_A {tuple(A.shape)}, lora_B {tuple(B.shape)}): use the merged export")
    return layer


def _fill(peft_model: nn.Module, plan: LoraPlan, adapter: str = "default") -> None:
    inner = peft_model.base_model.model
    with torch.no_grad():
        for f in plan.factors:
            layer = _param_wrapper(inner, f) if f.kind == "experts3d" else inner.get_submodule(f.name)
            if f.kind == "embedding":
                A, B = layer.lora_embedding_A[adapter], layer.lora_embedding_B[adapter]
            else:
                A, B = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
            A.copy_(f.A.to(A.dtype))
            B.copy_(f.B.to(B.dtype))
            if f.bias is not None:
                bias = layer.get_base_layer().bias
                bias.copy_(f.bias.to(bias.dtype))


@contextlib.contextmanager
def _restored(model: nn.Module, names: list[str]) -> Iterator[None]:
    """PEFT writes an adapter's biases into the base model and freezes its parameters; undo both afterwards."""
    saved = {n: model.get_submodule(n).bias.detach().clone() for n in names
             if getattr(model.get_submodule(n), "bias", None) is not None}
    trainable = [p.requires_grad for p in model.parameters()]
    try:
        yield
    finally:
        with torch.no_grad():
            for n, b in saved.items():
                module = model.get_submodule(n)
                getattr(module, "base_layer", module).bias.copy_(b)
        for p, flag in zip(model.parameters(), trainable):
            p.requires_grad_(flag)


def save_lora(model: nn.Module, plan: LoraPlan, target: Path, provenance: dict[str, Any],
              base_model: str | None = None) -> Path:
    """Write ``target``/{adapter_config.json, adapter_model.safetensors, alignlab_provenance.json} atomically
    (a temporary sibling directory renamed into place). ``model`` is wrapped and unwrapped in place."""
    from peft import get_peft_model

    target = Path(target)
    with atomic_dir(target) as tmp:
        with _restored(model, plan.target_modules):
            with warnings.catch_warnings():  # PEFT warns about a tied embedding: leaving the head alone is the point
                warnings.filterwarnings("ignore", message=".*tie_word_embeddings", category=UserWarning)
                peft_model = get_peft_model(model, _lora_config(plan, base_model))
            try:
                _fill(peft_model, plan)
                # the base embedding is unchanged: never copy it into the adapter
                peft_model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
            finally:
                peft_model.unload()
        write_json_atomic(tmp / PROVENANCE, {**provenance, "lora": {
            "rank": 1, "lora_alpha": 1, "target_modules": plan.target_modules,
            "target_parameters": plan.target_parameters, "weights": plan.weights,
            "bias_vectors": [f.name for f in plan.factors if f.bias is not None],
            "postnorm": plan.postnorm,
            "formula": "W <- W - w * u (v^T W), b <- b - w (v.b) u with u = v = r (behind a post-norm with gain g, "
                       "postnorm=approximate: u = r/g, v = g*r); embeddings E <- E - w * (E r) r^T"}})
    return target


@contextlib.contextmanager
def loaded_adapter(model: nn.Module, path: Path) -> Iterator[nn.Module]:
    """``PeftModel.from_pretrained(model, path)`` for the body; afterwards ``model`` is as it was."""
    from peft import PeftModel

    anatomy = map_model(model)
    names = [w.name for w in anatomy.writers() if w.kind != "experts3d"]
    with _restored(model, names):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tie_word_embeddings", category=UserWarning)
            peft_model = PeftModel.from_pretrained(model, str(path))
        try:
            yield peft_model
        finally:
            peft_model.unload()


@dataclass(frozen=True)
class LoraExport:
    path: Path
    max_abs_logit_diff: float | None
    """max |Δlogit| between the unedited model + adapter and the merged edit on the probe (None: not checked)."""
    max_abs_logit: float | None
    """max |logit| of the merged edit on the probe (the scale the difference is judged against)."""
    edit_effect: float | None
    """max |Δlogit| between the unedited model and the merged edit on the probe (what the adapter must add)."""

    def matches(self, dtype: torch.dtype) -> bool:
        """The difference is rounding: within 1e-4 of the logit scale in float32/64. In 16-bit types rounding
        alone reaches ~15 % of the edit's effect (SmolLM2-135M bf16: 0.69 vs 4.96; hooks vs merged: 0.94), so
        only a gross failure is caught there: more than half of the edit's effect missing."""
        if self.max_abs_logit_diff is None or self.max_abs_logit is None or self.edit_effect is None:
            return True
        if dtype in (torch.float32, torch.float64):
            return self.max_abs_logit_diff <= 1e-4 * max(1.0, self.max_abs_logit)
        return self.max_abs_logit_diff <= 0.5 * self.edit_effect


def export_lora(model: nn.Module, direction: torch.Tensor, target: Path, provenance: dict[str, Any],
                weights: Mapping[str, float] | None = None, base_model: str | None = None,
                probe: dict[str, torch.Tensor] | None = None, reference: nn.Module | None = None,
                postnorm: str = "approximate") -> LoraExport:
    """Export the edit of the unedited ``model`` along ``direction`` as a LoRA adapter at ``target``.

    With ``probe`` (forward kwargs) and ``reference`` (the merged, edited model), reload the adapter onto
    ``model`` and measure max |Δlogit| against ``reference``; ``model`` is left unchanged."""
    plan = lora_factors(model, direction, weights, postnorm=postnorm)
    save_lora(model, plan, Path(target), provenance, base_model)
    if probe is None or reference is None:
        return LoraExport(Path(target), None, None, None)
    mask = probe["attention_mask"].bool() if "attention_mask" in probe else ...  # padded positions mean nothing
    with torch.no_grad():
        base = model(**probe).logits.float()[mask]
        b = reference(**probe).logits.float()[mask]
        with loaded_adapter(model, target) as adapted:
            a = adapted(**probe).logits.float()[mask]
    return LoraExport(Path(target), float((a - b).abs().max()), float(b.abs().max()), float((base - b).abs().max()))


def check_run(model: nn.Module, edit_cfg: Any) -> None:
    """Fail before the pipeline's long stages when ``--export-lora`` cannot work for this model or setup."""
    try:
        import peft  # noqa: F401
    except ImportError as exc:
        raise AlignlabError("--export-lora needs the `peft` package: pip install peft (or alignlab[dev])") from exc
    check_lora_exportable(map_model(model), edit_cfg.norm_preserve, edit_cfg.postnorm)


@dataclass
class PendingAdapter:
    """RUN/adapter written from the unedited model, with the logits the merged edit is checked against."""

    path: Path
    probe: dict[str, torch.Tensor]
    base: torch.Tensor
    """Unedited model's logits on the probe's attended positions [tokens, vocab]."""
    adapted: torch.Tensor
    """Unedited model + adapter (PEFT-loaded) on the same positions."""
    dtype: torch.dtype
    seconds: float


def prepare_run_adapter(state: Any, chosen: Any, provenance: dict[str, Any], probe: Any) -> PendingAdapter:
    """First half of ``--export-lora``, on the unedited ``state.lm.model`` (the pipeline edits in place
    afterwards): write RUN/adapter from ``chosen`` (an ``Intervention``) and record the logits of the
    unedited model with and without the reloaded adapter."""
    import time

    from alignlab.refusal.forward import position_ids

    if chosen.extra is not None:
        raise AlignlabError(f"--export-lora writes a rank-1 adapter; this run ablates a rank-{chosen.rank} subspace "
                            "(drop --export-lora, or pass --subspace-rank 1)")
    start = time.perf_counter()
    model = state.lm.model
    weights = writer_weights(map_model(model), chosen.weights)
    kw = {"input_ids": probe.input_ids, "attention_mask": probe.attention_mask,
          "position_ids": position_ids(probe.attention_mask)}
    path = state.run.file("adapter")
    plan = lora_factors(model, chosen.direction.float(), weights, postnorm=state.cfg.edit.postnorm)
    save_lora(model, plan, path, provenance, state.cfg.model)
    mask = probe.attention_mask.bool()
    with torch.no_grad():
        base = model(**kw).logits.float()[mask]
        with loaded_adapter(model, path) as adapted_model:
            adapted = adapted_model(**kw).logits.float()[mask]
    return PendingAdapter(path, kw, base, adapted, next(model.parameters()).dtype, time.perf_counter() - start)


def finish_run_adapter(pending: PendingAdapter, edited: nn.Module, provenance: dict[str, Any]) -> dict[str, Any]:
    """Second half: compare with the merged ``edited`` model; an adapter that does not reproduce it is deleted
    and the run fails, naming the gap. The adapter's provenance gains the edit's measured report."""
    mask = pending.probe["attention_mask"].bool()
    with torch.no_grad():
        merged = edited(**pending.probe).logits.float()[mask]
    out = LoraExport(pending.path, float((pending.adapted - merged).abs().max()), float(merged.abs().max()),
                     float((pending.base - merged).abs().max()))
    if not out.matches(pending.dtype):
        shutil.rmtree(out.path, ignore_errors=True)
        raise AlignlabError(f"the LoRA adapter does not reproduce the merged edit (max |Δlogit| "
                            f"{out.max_abs_logit_diff:.3g} at logit scale {out.max_abs_logit:.3g}); this "
                            "intervention is not a rank-1 projection per writer: use the merged export (RUN/model)")
    record = pending.path / PROVENANCE
    write_json_atomic(record, {**json.loads(record.read_text()), "edit": provenance.get("edit", {})})
    return {"adapter": str(out.path), "adapter_max_abs_logit_diff": out.max_abs_logit_diff}
