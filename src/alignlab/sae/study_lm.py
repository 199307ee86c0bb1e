"""The study's language-model measurements: CE loss recovered (spec §5) and the sparse-probing activations.

Both are cached inside the study folder (``saes/<name>/ce.json``, ``probe/``), so a rerun repeats neither.
The study's SAEs read inputs scaled by s; ``InputScaled`` lets the ordinary evaluation feed them raw
activations (x -> s x in, x_hat -> x_hat / s out).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignlab.io import save_tensors_atomic, write_json_atomic
from alignlab.sae.study_config import StudyConfig


class InputScaled(torch.nn.Module):
    """An SAE trained on s * x, as a module that consumes and reconstructs raw x.

    ``passthrough_norm``: rows whose raw norm exceeds it are the outlier rows the study leaves out of
    training (StudyConfig.outlier_norm); ``decode(encode(x))`` returns them unchanged, so the CE splice
    leaves them alone as it leaves BOS alone. ``evaluate_saes`` calls encode then decode on the same rows.
    """

    def __init__(self, sae: torch.nn.Module, scale: float, passthrough_norm: float | None = None) -> None:
        super().__init__()
        self.sae, self.scale, self.cfg = sae, scale, sae.cfg
        self.passthrough_norm = passthrough_norm
        self._raw: Tensor | None = None

    def encode(self, x: Tensor) -> Tensor:  # [B, d] raw -> [B, d_sae]
        self._raw = x if self.passthrough_norm is not None else None
        return self.sae.encode(x * self.scale)

    def decode(self, f: Tensor) -> Tensor:  # [B, d_sae] -> [B, d] raw
        x_hat = self.sae.decode(f) / self.scale
        raw, self._raw = self._raw, None
        if raw is None or raw.shape != x_hat.shape:
            return x_hat
        outlier = raw.norm(dim=1, keepdim=True) > self.passthrough_norm  # [B, 1]
        return torch.where(outlier, raw.to(x_hat.dtype), x_hat)


def ce_recovered(
    root: Path,
    results: dict[str, dict[str, Any]],
    lm: Any,
    hook: Any,
    manifest: dict[str, Any],
    scale: float,
    cfg: StudyConfig,
    log: Callable[[str], None],
    chunk: int = 16,
    passthrough_norm: float | None = None,
) -> dict[str, float | None]:
    """CE loss recovered of every SAE in ``results`` (name -> result record), cached per SAE."""
    from alignlab.sae.activations import corpus
    from alignlab.sae.evaluate import EvalConfig, evaluate_saes
    from alignlab.sae.study_train import load_study_sae

    out: dict[str, float | None] = {}
    todo = []
    for name in sorted(results):
        path = root / "saes" / name / "ce.json"
        if path.is_file():
            out[name] = json.loads(path.read_text(encoding="utf-8"))["ce_loss_recovered"]
        else:
            todo.append(name)
    ecfg = EvalConfig(
        tokens=cfg.ce_tokens,
        context_size=int(manifest.get("context_size", 128)),
        batch_contexts=cfg.ce_batch_contexts,
        text=manifest.get("text_source"),
        seed=cfg.seed,
    )
    for i in range(0, len(todo), chunk):
        names = todo[i : i + chunk]
        log(f"CE loss recovered: SAEs {i + 1}-{i + len(names)} of {len(todo)}")
        saes = [InputScaled(load_study_sae(root, results[n]), scale, passthrough_norm) for n in names]
        texts = corpus(ecfg.text, seed=cfg.seed, part="eval", eval_frac=ecfg.eval_frac)
        evals = evaluate_saes(lm.model, lm.tokenizer, saes, hook, texts, ecfg, names=names, progress=False)
        for name, ev in zip(names, evals):
            rec = {
                "ce_loss_recovered": ev["ce_loss_score"],
                "ce_loss_with_sae": ev["ce_loss_with_sae"],
                "ce_loss_without_sae": ev["ce_loss_without_sae"],
                "ce_loss_with_ablation": ev["ce_loss_with_ablation"],
                "n_tokens": ev["n_tokens"],
            }
            write_json_atomic(root / "saes" / name / "ce.json", rec)
            out[name] = rec["ce_loss_recovered"]
    return out


def probe_texts(seed: int) -> list[str]:
    """Held-out (eval-split) standard-library source files, in path order."""
    from alignlab.data.text import python_text_files
    from alignlab.sae.activations import is_heldout

    texts = []
    for path in python_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip() and is_heldout(text, 0.05):
            texts.append(text)
    return texts


def probe_data(root: Path, lm: Any, hook: Any, cfg: StudyConfig, context_size: int) -> Any:
    """The labelled probe activations (collected once, then read from ``probe/data.safetensors``)."""
    from safetensors.torch import load_file

    from alignlab.sae.study_probe import ProbeData, collect

    path = root / "probe" / "data.safetensors"
    if path.is_file():
        t = load_file(str(path))
        return ProbeData(t["acts"], t["cats"], t["depths"], t["files"])
    data = collect(lm.model, lm.tokenizer, hook, probe_texts(cfg.seed), cfg.probe_tokens, context_size)
    save_tensors_atomic(
        path, {"acts": data.acts.contiguous(), "cats": data.cats, "depths": data.depths, "files": data.files}
    )
    return data


def run_probes(
    root: Path,
    data: Any,
    chosen: dict[str, dict[str, Any]],
    scale: float,
    cfg: StudyConfig,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Dense probes once, then k-sparse probes for each architecture's chosen SAE (cached per SAE)."""
    from alignlab.sae.study_probe import dense_probes, latent_acts, sparse_probes, splits
    from alignlab.sae.study_train import load_study_sae

    task_splits = splits(data, cfg.seed)
    dense_path = root / "probe" / "dense.json"
    if dense_path.is_file():
        dense = json.loads(dense_path.read_text(encoding="utf-8"))
    else:
        log(f"dense probes on {data.acts.shape[0]} tokens, tasks {', '.join(task_splits)}")
        dense = dense_probes(data, task_splits)
        write_json_atomic(dense_path, dense)
    saes: dict[str, Any] = {}
    for arch, res in chosen.items():
        path = root / "probe" / f"{res['name']}.json"
        if path.is_file():
            acc = json.loads(path.read_text(encoding="utf-8"))
        else:
            log(f"sparse probes: {arch} ({res['name']})")
            feats = latent_acts(load_study_sae(root, res).eval(), data.acts, scale)
            acc = sparse_probes(feats, task_splits, cfg.probe_ks)
            write_json_atomic(path, acc)
        mean = {str(k): sum(acc[t][str(k)] for t in acc) / max(len(acc), 1) for k in cfg.probe_ks}
        saes[arch] = {"name": res["name"], "l0": res["heldout"]["l0"], "acc": acc, "mean_acc": mean}
    sizes = {t: {"train": int(len(tr)), "test": int(len(te))} for t, (tr, te, _y) in task_splits.items()}
    return {
        "tasks": sizes,
        "dense": dense,
        "dense_mean": sum(dense.values()) / max(len(dense), 1),
        "saes": saes,
        "n_tokens": int(data.acts.shape[0]),
    }
