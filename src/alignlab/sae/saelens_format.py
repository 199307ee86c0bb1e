"""SAELens v6 folder format (spec §6): ``cfg.json`` + ``sae_weights.safetensors`` (+ ``sparsity.safetensors``).

This is alignlab's native SAE format. Tensors use the SAELens layout (``W_enc`` [d_in, d_sae], ``W_dec``
[d_sae, d_in]). A dataset-level input scale s is folded into the weights on save (W_enc * s, W_dec / s,
b_dec / s), so a saved SAE always consumes raw activations. alignlab's own config and provenance go under
``metadata.alignlab``; tensors whose internal form differs from the SAELens one (JumpReLU log theta, the
BatchTopK scalar theta) are also written to ``alignlab_state.safetensors`` so that an alignlab round trip is
bit-exact. Readers tolerate unknown keys and map flat pre-6.0 configs (``hook_point``,
``activation_fn_str``, ``hook_layer``).

``hook_name`` is written as the TransformerLens name SAELens users expect (``blocks.15.hook_resid_post``);
readers accept it and alignlab's own §3.1 address (``resid_post.15``). SAELens TopK files saved with
``rescale_acts_by_decoder_norm=true`` (the SAELens training default) are folded on load: W_enc and b_enc are
multiplied by ||d_i|| and W_dec divided by it, which is SAELens's own ``fold_W_dec_norm`` and leaves the
forward function unchanged (the saved rows already have unit norm, so the factors are 1 up to rounding).
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignlab.errors import AlignlabError
from alignlab.io import save_tensors_atomic, write_json_atomic
from alignlab.sae.base import SAE, SAEConfig

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
STATE_FILE = "alignlab_state.safetensors"
SAELENS_VERSION_WRITTEN = "6.18.0"  # the format snapshot of spec §8
SAELENS_TO_ALIGNLAB = {"standard": "standard", "gated": "gated", "jumprelu": "jumprelu", "topk": "topk"}
# alignlab §3.1 site -> TransformerLens hook suffix (blocks.{layer}.hook_{site}); the same names both ways.
TL_SITES = ("resid_post", "resid_pre", "attn_out", "mlp_out")
_TL_NAME = re.compile(r"^blocks\.(\d+)\.hook_(" + "|".join(TL_SITES) + r")$")
EXPECTED_TENSORS = {
    "standard": {"W_enc", "b_enc", "W_dec", "b_dec"},
    "topk": {"W_enc", "b_enc", "W_dec", "b_dec"},
    "gated": {"W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag"},
    "jumprelu": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
}


@torch.no_grad()
def fold_input_scale(sae: SAE) -> SAE:
    """A copy of ``sae`` that consumes raw activations: s folded into W_enc, W_dec, b_dec (spec §3.5)."""
    s = sae.cfg.input_scale
    out = copy.deepcopy(sae)
    if s != 1.0:
        out.W_enc.mul_(s)
        out.W_dec.div_(s)
        out.b_dec.div_(s)
    out.cfg = sae.cfg.replace(input_scale=1.0)
    return out


def transformer_lens_name(cfg: SAEConfig) -> str | None:
    """``blocks.{layer}.hook_{site}`` for the config's hook, or None when the hook has no TL name or layer."""
    from alignlab.sae.activations import POINT_TO_SITE

    point, _, tail = (cfg.hook_point or "").partition(".")
    site = POINT_TO_SITE.get(point, point)
    layer = int(tail) if tail.isdigit() else cfg.hook_layer
    if site not in TL_SITES or layer is None or layer < 0:
        return None
    return f"blocks.{layer}.hook_{site}"


def hook_address(hook_name: str) -> tuple[str, int | None]:
    """(alignlab address, layer) for a TransformerLens name or an alignlab address; other names pass through."""
    m = _TL_NAME.match(hook_name)
    if m:
        return f"{m.group(2)}.{m.group(1)}", int(m.group(1))
    site, _, tail = hook_name.partition(".")
    return hook_name, int(tail) if site in TL_SITES and tail.isdigit() else None


def saelens_cfg(sae: SAE) -> dict[str, Any]:
    """The cfg.json dict SAELens 6.x reads (architecture-specific fields at top level)."""
    cfg = sae.cfg
    alignlab_cfg = cfg.to_dict()
    alignlab_cfg["input_scale"] = 1.0
    out: dict[str, Any] = {
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": str(sae.W_enc.dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": bool(cfg.apply_b_dec_to_input),
        "normalize_activations": "none",  # any dataset-level scale is folded into the weights
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": SAELENS_VERSION_WRITTEN,
            "sae_lens_training_version": SAELENS_VERSION_WRITTEN,
            "model_name": cfg.model or None,
            "hook_name": transformer_lens_name(cfg) or cfg.hook_point,
            "hook_layer": cfg.hook_layer,
            "hook_head_index": None,
            "context_size": cfg.context_size,
            "prepend_bos": True,
            "seqpos_slice": [None],
            "dataset_path": cfg.extra.get("dataset_path"),
            "model_from_pretrained_kwargs": {},
            "exclude_special_tokens": True,
            "neuronpedia_id": None,
            "alignlab": {"config": alignlab_cfg, "architecture": cfg.architecture, "format_version": 1,
                         "hook": cfg.hook_point},
        },
    }
    out.update(sae.saelens_cfg_extra())
    out["architecture"] = sae.saelens_architecture
    return out


def save_sae(sae: SAE, directory: str | os.PathLike[str], *, log_sparsity: Tensor | None = None) -> Path:
    """Write ``sae`` (folded to raw units) as a SAELens v6 folder; every file is written atomically."""
    folded = fold_input_scale(sae)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().contiguous() for k, v in folded.saelens_tensors().items()}
    state = folded.state_dict()
    extra = {k: v for k, v in state.items() if k not in tensors or not torch.equal(tensors[k], v)}
    save_tensors_atomic(d / WEIGHTS_FILE, tensors)
    if extra:
        save_tensors_atomic(d / STATE_FILE, extra)
    elif (d / STATE_FILE).exists():
        (d / STATE_FILE).unlink()
    if log_sparsity is not None:
        save_tensors_atomic(d / SPARSITY_FILE, {"sparsity": log_sparsity.detach().float()})
    write_json_atomic(d / CFG_FILE, saelens_cfg(folded))
    return d


def _read_cfg(d: Path) -> dict[str, Any]:
    path = d / CFG_FILE
    if not path.is_file():
        raise AlignlabError(f"no {CFG_FILE} in {d}; point at a SAELens SAE folder (cfg.json + {WEIGHTS_FILE})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AlignlabError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); re-export the SAE") from None


def _is_pre_v6(raw: dict[str, Any]) -> bool:
    version = raw.get("sae_lens_version") or (raw.get("metadata") or {}).get("sae_lens_version")
    if not version:
        return True
    try:
        return int(str(version).split(".")[0]) < 6
    except ValueError:
        return True


def _map_pre_v6(raw: dict[str, Any]) -> dict[str, Any]:
    """Flat pre-6.0 config -> the v6 shape (hook_point -> hook_name, activation_fn_str -> activation_fn)."""
    out = dict(raw)
    meta = dict(out.get("metadata") or {})
    for old, new in (("hook_point", "hook_name"), ("model_name", "model_name"), ("context_size", "context_size")):
        if old in raw:
            meta[new] = raw[old]
    if "hook_layer" in raw:
        meta["hook_layer"] = raw["hook_layer"]
    act = raw.get("activation_fn_str", raw.get("activation_fn", "relu"))
    arch = raw.get("architecture", "standard")
    if act == "topk":
        arch = "topk"
        out["k"] = (raw.get("activation_fn_kwargs") or {}).get("k", raw.get("k"))
    out["architecture"] = arch
    out.setdefault("apply_b_dec_to_input", True)
    out["metadata"] = meta
    return out


def _config_from_raw(raw: dict[str, Any], where: Path) -> SAEConfig:
    meta = raw.get("metadata") or {}
    own = (meta.get("alignlab") or {}).get("config")
    if own:
        return SAEConfig.from_dict(own)
    arch = raw.get("architecture", "standard")
    if arch not in SAELENS_TO_ALIGNLAB:
        raise AlignlabError(
            f"{where}: SAELens architecture {arch!r} is not supported; supported: {', '.join(SAELENS_TO_ALIGNLAB)}"
        )
    if raw.get("normalize_activations", "none") not in ("none", None, False):
        raise AlignlabError(
            f"{where}: normalize_activations={raw['normalize_activations']!r} is not folded into the weights; "
            "fold it in SAELens (fold_activation_norm_scaling_factor) and save again"
        )
    if raw.get("rescale_acts_by_decoder_norm") and arch != "topk":
        raise AlignlabError(f"{where}: rescale_acts_by_decoder_norm=true on a {arch} SAE is not a SAELens 6 layout")
    hook, layer = hook_address(str(meta.get("hook_name") or "block_out"))
    if meta.get("hook_layer") is not None:
        layer = int(meta["hook_layer"])
    try:
        return SAEConfig(
            architecture=SAELENS_TO_ALIGNLAB[arch],
            d_in=int(raw["d_in"]),
            d_sae=int(raw["d_sae"]),
            k=raw.get("k"),
            apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
            unit_norm_decoder=False,  # a foreign decoder's norms are whatever they are; keep them
            model=str(meta.get("model_name") or ""),
            hook_point=hook,
            hook_layer=-1 if layer is None else layer,
            context_size=int(meta.get("context_size") or 128),
        )
    except KeyError as e:
        raise AlignlabError(f"{where}/{CFG_FILE} lacks {e.args[0]!r}; it is not a SAELens config") from None


def load_sae(directory: str | os.PathLike[str], *, expect: SAEConfig | None = None) -> SAE:
    """Read a SAELens folder (ours or SAELens's, v6 or pre-6.0) into an alignlab SAE (eval mode, fp32)."""
    from safetensors.torch import load_file

    from alignlab.sae.registry import build_sae

    d = Path(directory)
    if not d.is_dir():
        raise AlignlabError(f"SAE folder {d} does not exist; pass the folder that holds {CFG_FILE}")
    raw = _read_cfg(d)
    if _is_pre_v6(raw):
        raw = _map_pre_v6(raw)
    cfg = _config_from_raw(raw, d)
    if expect is not None:
        check_expected(cfg, expect, d)
    if not (d / WEIGHTS_FILE).is_file():
        raise AlignlabError(f"no {WEIGHTS_FILE} in {d}; the SAE folder is incomplete")
    tensors = load_file(str(d / WEIGHTS_FILE))
    _check_tensors(tensors, raw.get("architecture", "standard"), cfg, d)
    sae = build_sae(cfg)
    state_path = d / STATE_FILE
    if state_path.is_file() and (raw.get("metadata") or {}).get("alignlab"):
        state = {**tensors, **load_file(str(state_path))}
        own = sae.state_dict()
        state = {k: v.to(own[k].dtype) for k, v in state.items() if k in own}
        sae.load_state_dict(state, strict=True)
    else:
        sae.load_saelens_tensors(foreign_tensors(tensors, raw))
    return sae.eval()


@torch.no_grad()
def foreign_tensors(tensors: dict[str, Tensor], raw: dict[str, Any]) -> dict[str, Tensor]:
    """fp32 tensors of a SAELens file in the form alignlab's forward reproduces exactly.

    - TopK with ``rescale_acts_by_decoder_norm``: SAELens computes TopK(pre * ||d_i||) and decodes
      (f / ||d_i||) @ W_dec; folding ||d_i|| into W_enc, b_enc and out of W_dec gives the same function
      (a zero row keeps a zero pre-activation, as SAELens's pre * 0 does).
    - JumpReLU: SAELens computes ReLU(z) * H(z - theta), which equals alignlab's z * H(z - max(theta, 0)).
    """
    out = {k: v.float() for k, v in tensors.items()}
    if raw.get("architecture") == "topk" and raw.get("rescale_acts_by_decoder_norm"):
        norms = out["W_dec"].double().norm(dim=1)  # [d_sae]
        out["W_enc"] = (out["W_enc"].double() * norms).float()
        out["b_enc"] = (out["b_enc"].double() * norms).float()
        out["W_dec"] = (out["W_dec"].double() / torch.where(norms > 0, norms, 1.0)[:, None]).float()
    if "threshold" in out:
        out["threshold"] = out["threshold"].clamp_min(0.0)
    return out


def check_expected(cfg: SAEConfig, expect: SAEConfig, where: Path) -> None:
    """One-line error when a checkpoint is a different architecture or width than the caller expects."""
    got = (cfg.architecture, cfg.d_in, cfg.d_sae)
    want = (expect.architecture, expect.d_in, expect.d_sae)
    if got != want:
        raise AlignlabError(
            f"{where} holds a {got[0]} SAE with d_in={got[1]}, d_sae={got[2]}, but a {want[0]} SAE with "
            f"d_in={want[1]}, d_sae={want[2]} was expected; pick the matching checkpoint or config"
        )


def _check_tensors(tensors: dict[str, Tensor], arch: str, cfg: SAEConfig, where: Path) -> None:
    expected = EXPECTED_TENSORS.get(arch)
    if expected is not None and set(tensors) != expected:
        raise AlignlabError(
            f"{where}/{WEIGHTS_FILE} has tensors {sorted(tensors)} but a {arch} SAE needs {sorted(expected)}; "
            "the cfg.json architecture does not match the weights"
        )
    shapes = {"W_enc": (cfg.d_in, cfg.d_sae), "W_dec": (cfg.d_sae, cfg.d_in), "b_dec": (cfg.d_in,)}
    for name in ("b_enc", "b_gate", "b_mag", "r_mag", "threshold"):
        shapes[name] = (cfg.d_sae,)
    for name, t in tensors.items():
        if name in shapes and tuple(t.shape) != shapes[name]:
            raise AlignlabError(
                f"{where}: {name} has shape {list(t.shape)} but cfg.json says d_in={cfg.d_in}, d_sae={cfg.d_sae}; "
                "the weights and config come from different SAEs"
            )
