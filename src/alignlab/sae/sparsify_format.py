"""EleutherAI sparsify checkpoints (spec §6): read (must) and write (should).

Layout written by sparsify's ``SparseCoder.save_to_disk``: one folder per hookpoint under the run folder,
``<run>/<hookpoint>/cfg.json`` (``activation``, ``expansion_factor``, ``normalize_decoder``, ``num_latents``,
``k``, ``multi_topk``, ``skip_connection``, ``transcode``, ``d_in``) and ``sae.safetensors`` (``encoder.weight``
[n, d], ``encoder.bias`` [n], ``W_dec`` [n, d], ``b_dec`` [d], optionally ``W_skip`` [d, d]); the run folder's
``config.json`` (the training config) is provenance only.

sparsify's forward is top-k of ReLU((x - b_dec) Wᵀ + b), x̂ = Σ top_acts · W_dec[idx] + b_dec: alignlab's TopK
SAE with ``apply_b_dec_to_input`` and W_enc = ``encoder.weight``ᵀ. The ReLU-then-top-k order equals alignlab's
top-k-then-ReLU (ReLU is monotone; only ties among zeros differ, and those contribute nothing).
"""

from __future__ import annotations

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
WEIGHTS_FILE = "sae.safetensors"
RUN_CONFIG_FILE = "config.json"
TENSORS = {"encoder.weight", "encoder.bias", "W_dec", "b_dec"}
# cfg.json switches whose SAE alignlab cannot represent (they change the forward function)
UNSUPPORTED = {"skip_connection": "a linear skip connection (W_skip)", "transcode": "a transcoder (no b_dec on the input)",
               "embed_skip": "an embedding skip connection", "gram_lookup": "an n-gram lookup table"}
# sparsify hookpoints are module paths of the HF base model: layers.5 (Llama, NeoX), h.5 (GPT-2), + .mlp/.attn
_HOOKPOINT = re.compile(r"^(?:.*\.)?(?:layers|h|blocks|layer)\.(\d+)(?:\.(mlp|self_attn|attn|attention))?$")


def is_sparsify_dir(path: str | os.PathLike[str]) -> bool:
    d = Path(path)
    return (d / CFG_FILE).is_file() and (d / WEIGHTS_FILE).is_file()


def hookpoint_dirs(run: str | os.PathLike[str]) -> list[Path]:
    """The hookpoint folders of a sparsify run folder (only folders that resolve inside ``run``)."""
    root = Path(run).resolve()
    found = []
    for child in sorted(Path(run).iterdir()):
        real = child.resolve()
        if child.is_dir() and real.is_relative_to(root) and real != root and is_sparsify_dir(real):
            found.append(child)
    return found


def hook_of_hookpoint(hookpoint: str) -> tuple[str, int]:
    """(alignlab §3.1 address, layer) of a sparsify hookpoint; unknown names pass through with layer -1."""
    m = _HOOKPOINT.match(hookpoint)
    if not m:
        return hookpoint, -1
    site = {None: "resid_post", "mlp": "mlp_out"}.get(m.group(2), "attn_out")
    return f"{site}.{m.group(1)}", int(m.group(1))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise AlignlabError(f"{path}: cannot read sparsify config ({e})") from None
    if not isinstance(out, dict):
        raise AlignlabError(f"{path}: expected a JSON object")
    return out


def load_sparsify(directory: str | os.PathLike[str]) -> SAE:
    """A sparsify hookpoint folder as an alignlab TopK SAE (fp32, eval mode)."""
    from safetensors.torch import load_file

    from alignlab.sae.registry import build_sae

    d = Path(directory)
    if not is_sparsify_dir(d):
        raise AlignlabError(f"{d} is not a sparsify SAE folder ({CFG_FILE} + {WEIGHTS_FILE})")
    raw = _read_json(d / CFG_FILE)
    for key, what in UNSUPPORTED.items():
        if raw.get(key):
            raise AlignlabError(f"{d}: {key}=true ({what}) has no alignlab equivalent; convert a plain SAE")
    if raw.get("activation", "topk") != "topk":
        raise AlignlabError(f"{d}: activation={raw['activation']!r} is not supported; only topk SAEs convert")
    tensors = load_file(str(d / WEIGHTS_FILE))
    if set(tensors) != TENSORS:
        raise AlignlabError(f"{d}/{WEIGHTS_FILE} has tensors {sorted(tensors)}; a sparsify TopK SAE has {sorted(TENSORS)}")
    n, d_in = tensors["encoder.weight"].shape
    if int(raw.get("d_in", d_in)) != d_in or tensors["W_dec"].shape != (n, d_in) or tensors["b_dec"].shape != (d_in,):
        raise AlignlabError(f"{d}: tensor shapes do not match d_in={raw.get('d_in')} and {n} latents")
    run_cfg = _read_json(d.parent / RUN_CONFIG_FILE) if (d.parent / RUN_CONFIG_FILE).is_file() else {}
    hook, layer = hook_of_hookpoint(d.name)
    cfg = SAEConfig(architecture="topk", d_in=d_in, d_sae=n, k=int(raw.get("k", 32)), apply_b_dec_to_input=True,
                    unit_norm_decoder=bool(raw.get("normalize_decoder", True)), model=str(run_cfg.get("model") or ""),
                    hook_point=hook, hook_layer=layer,
                    extra={"source_format": "sparsify", "hookpoint": d.name, "sparsify_cfg": raw})
    sae = build_sae(cfg)
    sae.load_saelens_tensors({"W_enc": tensors["encoder.weight"].float().t().contiguous(),
                              "b_enc": tensors["encoder.bias"].float(), "W_dec": tensors["W_dec"].float(),
                              "b_dec": tensors["b_dec"].float()})
    return sae.eval()


def sparsify_tensors(sae: SAE) -> dict[str, Tensor]:
    """The sparsify ``sae.safetensors`` tensors of an alignlab TopK SAE (input scale folded)."""
    from alignlab.sae.saelens_format import fold_input_scale

    if sae.cfg.architecture != "topk" or not sae.cfg.apply_b_dec_to_input:
        raise AlignlabError(
            f"sparsify stores TopK SAEs that subtract b_dec from the input; this is a {sae.cfg.architecture} SAE "
            f"(apply_b_dec_to_input={sae.cfg.apply_b_dec_to_input}); write it in the SAELens format instead"
        )
    folded = fold_input_scale(sae)
    with torch.no_grad():
        return {"encoder.weight": folded.W_enc.detach().float().t().contiguous(),
                "encoder.bias": folded.b_enc.detach().float().clone(),
                "W_dec": folded.W_dec.detach().float().clone(), "b_dec": folded.b_dec.detach().float().clone()}


def save_sparsify(sae: SAE, directory: str | os.PathLike[str]) -> Path:
    """Write an alignlab TopK SAE as a sparsify hookpoint folder (atomic writes)."""
    tensors = sparsify_tensors(sae)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"activation": "topk", "expansion_factor": max(1, sae.cfg.d_sae // sae.cfg.d_in),
           "normalize_decoder": bool(sae.cfg.unit_norm_decoder), "num_latents": sae.cfg.d_sae, "k": sae.cfg.k,
           "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": sae.cfg.d_in}
    save_tensors_atomic(d / WEIGHTS_FILE, tensors)
    write_json_atomic(d / CFG_FILE, cfg)
    return d
