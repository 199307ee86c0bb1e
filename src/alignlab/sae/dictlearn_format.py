"""saprmarks/dictionary_learning checkpoints (spec §6): read.

Layout written by ``dictionary_learning.training.trainSAE``: ``<save_dir>/trainer_<i>/ae.pt`` (a ``torch.save``
of the state dict; with ``normalize_activations`` the biases are already scaled back to raw units),
``config.json`` (``{"trainer": {dict_class, trainer_class, activation_dim, dict_size, layer, lm_name,
submodule_name, k, ...}, "buffer": {...}}``) and ``checkpoints/ae_<step>.pt``. A mid-run backup ``ae.pt`` is a
dict ``{step, ae, optimizer, config, norm_factor}`` whose weights still expect x / norm_factor.

``ae.pt`` is a pickle. It is read only with ``torch.load(weights_only=True)`` (tensors and plain containers,
no code) and only when the caller opts in (``allow_torch_load`` / ``--allow-torch-load``).

Each ``dict_class`` maps to an alignlab architecture in ``DICT_CLASSES`` (forward functions transcribed from
dictionary_learning/dictionary.py and trainers/{top_k,batch_top_k,matryoshka_batch_top_k}.py):
AutoEncoder and AutoEncoderNew -> standard, GatedAutoEncoder -> gated, JumpReluAutoEncoder -> jumprelu
(ReLU(z·H(z - θ)) = z·H(z - max(θ, 0))), AutoEncoderTopK -> topk, BatchTopKSAE -> batchtopk and
MatryoshkaBatchTopKSAE -> matryoshka (inference with the stored threshold).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignlab.errors import AlignlabError
from alignlab.sae.base import SAE, SAEConfig

AE_FILE = "ae.pt"
CONFIG_FILE = "config.json"
OPT_IN = "--allow-torch-load"
_SUBMODULE = re.compile(r"(resid_post|resid_pre|attn_out|mlp_out)_layer_(\d+)")

Converted = tuple[str, dict[str, Any], dict[str, Tensor]]  # (architecture, SAEConfig fields, SAELens-layout tensors)


def _t(sd: dict[str, Tensor], key: str) -> Tensor:
    if key not in sd:
        raise AlignlabError(f"the state dict lacks {key!r} (has {', '.join(sorted(sd))}); wrong dict_class?")
    return sd[key].float()


def _standard(sd: dict[str, Tensor]) -> Converted:
    # AutoEncoder: f = ReLU(encoder(x - bias)), x_hat = decoder(f) + bias
    return "standard", {"apply_b_dec_to_input": True}, {
        "W_enc": _t(sd, "encoder.weight").t(), "b_enc": _t(sd, "encoder.bias"),
        "W_dec": _t(sd, "decoder.weight").t(), "b_dec": _t(sd, "bias")}


def _standard_new(sd: dict[str, Tensor]) -> Converted:
    # AutoEncoderNew (April 2024): f = ReLU(encoder(x)), x_hat = decoder(f) (decoder has the bias)
    return "standard", {"apply_b_dec_to_input": False}, {
        "W_enc": _t(sd, "encoder.weight").t(), "b_enc": _t(sd, "encoder.bias"),
        "W_dec": _t(sd, "decoder.weight").t(), "b_dec": _t(sd, "decoder.bias")}


def _gated(sd: dict[str, Tensor]) -> Converted:
    # spec §6 key mapping: W_enc = encoder.weightᵀ, W_dec = decoder.weightᵀ, b_dec = decoder_bias, ...
    return "gated", {"apply_b_dec_to_input": True}, {
        "W_enc": _t(sd, "encoder.weight").t(), "W_dec": _t(sd, "decoder.weight").t(),
        "b_dec": _t(sd, "decoder_bias"), "b_gate": _t(sd, "gate_bias"), "b_mag": _t(sd, "mag_bias"),
        "r_mag": _t(sd, "r_mag")}


def _jumprelu(sd: dict[str, Tensor]) -> Converted:
    # apply_b_dec_to_input is a plain attribute (False), not saved in the state dict
    return "jumprelu", {"apply_b_dec_to_input": False}, {
        "W_enc": _t(sd, "W_enc"), "b_enc": _t(sd, "b_enc"), "W_dec": _t(sd, "W_dec"), "b_dec": _t(sd, "b_dec"),
        "threshold": _t(sd, "threshold").clamp_min(0.0)}


def _topk_common(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    if "encoder.weight" in sd:  # AutoEncoderTopK / BatchTopKSAE keep nn.Linear modules
        return {"W_enc": _t(sd, "encoder.weight").t(), "b_enc": _t(sd, "encoder.bias"),
                "W_dec": _t(sd, "decoder.weight").t(), "b_dec": _t(sd, "b_dec")}
    return {k: _t(sd, k) for k in ("W_enc", "b_enc", "W_dec", "b_dec")}  # Matryoshka keeps parameters


def _topk(sd: dict[str, Tensor]) -> Converted:
    return "topk", {"k": int(sd["k"]), "apply_b_dec_to_input": True}, _topk_common(sd)


def _batchtopk(sd: dict[str, Tensor]) -> Converted:
    tensors = _topk_common(sd)
    tensors["threshold"] = _t(sd, "threshold").reshape(()).expand(tensors["b_enc"].shape[0]).clone()
    return "batchtopk", {"k": int(sd["k"]), "apply_b_dec_to_input": True,
                         "threshold_estimator": "dictionary_learning"}, tensors


def _matryoshka(sd: dict[str, Tensor]) -> Converted:
    arch, fields, tensors = _batchtopk(sd)
    widths = torch.cumsum(sd["group_sizes"].long(), 0).tolist()
    return "matryoshka", {**fields, "matryoshka_widths": tuple(int(w) for w in widths)}, tensors


DICT_CLASSES: dict[str, Callable[[dict[str, Tensor]], Converted]] = {
    "AutoEncoder": _standard,
    "AutoEncoderNew": _standard_new,
    "GatedAutoEncoder": _gated,
    "JumpReluAutoEncoder": _jumprelu,
    "AutoEncoderTopK": _topk,
    "BatchTopKSAE": _batchtopk,
    "MatryoshkaBatchTopKSAE": _matryoshka,
}
# state-dict keys that identify a dict_class when no config.json is at hand
_SIGNATURES = [({"group_sizes"}, "MatryoshkaBatchTopKSAE"), ({"gate_bias", "r_mag"}, "GatedAutoEncoder"),
               ({"W_enc", "threshold"}, "JumpReluAutoEncoder"), ({"decoder.bias"}, "AutoEncoderNew"),
               ({"bias", "encoder.weight"}, "AutoEncoder")]


def is_dictlearn(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.suffix == ".pt" and p.is_file() or p.is_dir() and (p / AE_FILE).is_file()


def _paths(path: Path) -> tuple[Path, Path | None]:
    """(ae file, config.json or None): ``trainer_i/``, ``trainer_i/ae.pt`` or ``trainer_i/checkpoints/ae_N.pt``."""
    ae = path / AE_FILE if path.is_dir() else path
    if not ae.is_file():
        raise AlignlabError(f"{path}: no {AE_FILE}; point at a dictionary_learning trainer folder or a .pt file")
    for folder in (ae.parent, ae.parent.parent if ae.parent.name == "checkpoints" else None):
        if folder is not None and (folder / CONFIG_FILE).is_file():
            return ae, folder / CONFIG_FILE
    return ae, None


def _hook(trainer: dict[str, Any]) -> tuple[str, int]:
    sub, layer = str(trainer.get("submodule_name") or ""), trainer.get("layer")
    m = _SUBMODULE.search(sub)
    if m:
        return f"{m.group(1)}.{m.group(2)}", int(m.group(2))
    # dictionary_learning's usual hook is a block's output (the residual stream after it)
    return ("block_out", int(layer)) if layer is not None else ("block_out", -1)


def load_dictlearn(path: str | os.PathLike[str], *, allow_torch_load: bool = False) -> SAE:
    """A dictionary_learning ``ae.pt`` as an alignlab SAE (fp32, eval mode, raw input units)."""
    from alignlab.sae.registry import build_sae
    from alignlab.sae.saelens_format import _check_tensors, fold_input_scale

    ae, config_path = _paths(Path(path))
    if not allow_torch_load:
        raise AlignlabError(f"{ae} is a torch pickle; pass {OPT_IN} to read it with torch.load(weights_only=True)")
    try:
        state = torch.load(ae, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - weights_only refuses anything but tensors and plain containers
        raise AlignlabError(f"{ae}: not a plain tensor checkpoint ({type(e).__name__}); refusing to unpickle") from None
    if not isinstance(state, dict):
        raise AlignlabError(f"{ae}: expected a state dict, found a {type(state).__name__}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path else {}
    except json.JSONDecodeError as e:
        raise AlignlabError(f"{config_path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    scale = 1.0
    if isinstance(state.get("ae"), dict):  # mid-run backup: weights expect x / norm_factor
        config = config or {"trainer": state.get("config") or {}}
        scale = 1.0 / float(state.get("norm_factor") or 1.0)
        state = state["ae"]
    trainer = config.get("trainer") or {}
    dict_class = trainer.get("dict_class") or next((c for keys, c in _SIGNATURES if keys <= set(state)), None)
    if dict_class is None and {"k", "threshold"} <= set(state):  # TopK and BatchTopK share their keys
        if not trainer.get("trainer_class"):
            raise AlignlabError(f"{ae}: a TopK or BatchTopK state dict without {CONFIG_FILE}; put the run's {CONFIG_FILE} beside it")
        dict_class = "BatchTopKSAE" if "BatchTopK" in str(trainer["trainer_class"]) else "AutoEncoderTopK"
    if dict_class not in DICT_CLASSES:
        raise AlignlabError(f"{ae}: dict_class {dict_class!r} is not supported; supported: {', '.join(DICT_CLASSES)}")
    arch, fields, tensors = DICT_CLASSES[dict_class]({k: v for k, v in state.items() if isinstance(v, Tensor)})
    hook, layer = _hook(trainer)
    n, d = tensors["W_dec"].shape
    cfg = SAEConfig(architecture=arch, d_in=d, d_sae=n, unit_norm_decoder=False, model=str(trainer.get("lm_name") or ""),
                    hook_point=hook, hook_layer=layer, input_scale=scale,
                    extra={"source_format": "dictionary_learning", "dict_class": dict_class,
                           "trainer_class": trainer.get("trainer_class"), "submodule_name": trainer.get("submodule_name")},
                    **fields)
    sae = build_sae(cfg)
    _check_tensors(tensors, sae.saelens_architecture, cfg, ae)
    sae.load_saelens_tensors({k: v.contiguous() for k, v in tensors.items()})
    return fold_input_scale(sae).eval()  # a backup's x / norm_factor folded in: the SAE reads raw activations
