"""Training the study's SAEs: one spec per SAE, groups of specs trained from one activation stream, held-out metrics.

Layout under the study folder::

    train/<group id>/            train_saes out_dir: checkpoints while running, sae_<i> folders at the end
    saes/<name>/result.json      spec, last training log record, held-out metrics, path of the SAE folder

A spec whose result.json exists is finished and skipped on a rerun; the unfinished specs of a group train
together and resume from their group's latest checkpoint (the group id hashes their names and the settings).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignlab.errors import AlignlabError
from alignlab.io import write_json_atomic
from alignlab.sae.base import SAE, SAEConfig, TrainState
from alignlab.sae.buffer import TensorBatches
from alignlab.sae.study_config import ABLATIONS, ARCH_FIELDS, ARCH_PRESETS, StudyConfig, setting_label
from alignlab.sae.train_config import TOPK_FAMILY


@dataclass(frozen=True)
class SaeSpec:
    """One SAE of the study."""

    section: str
    """sweep | frontier | ablation | width."""
    arch: str
    """Study architecture (study_config.ARCH_PRESETS)."""
    setting: dict[str, Any]
    """Sparsity fields (l1_coefficient, k or threshold_init)."""
    lr: float
    expansion: int
    init_from: str | None = None
    """rescale_shift: name of the trained standard SAE it starts from."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Unique and filesystem-safe, e.g. ``gated__l1=0.1__lr=0.0003__x4``."""
        return f"{self.arch}__{setting_label(self.setting)}__lr={self.lr:g}__x{self.expansion}"


class ScaledBatches(TensorBatches):
    """TensorBatches of raw rows multiplied by the study's input scale s (supports ``skip`` for resume)."""

    def __init__(self, data: Tensor, batch_size: int, steps: int, scale: float, seed: int = 0) -> None:
        super().__init__(data, batch_size, steps, seed)
        self.scale = scale

    def __next__(self) -> Tensor:
        return super().__next__() * self.scale


def sae_config(spec: SaeSpec, d: int, seed: int, meta: dict[str, Any]) -> SAEConfig:
    """The SAEConfig of ``spec``: its preset's recipe, the study's sparsity setting, inputs already scaled.

    ``meta`` holds hook metadata fields (model, hook_point, hook_layer, context_size) and ``extra`` provenance.
    """
    from alignlab.sae import preset_config

    extra = {"study": spec.name, **meta.get("extra", {})}
    fields = {
        **ARCH_FIELDS.get(spec.arch, {}),
        **spec.setting,
        **{k: v for k, v in meta.items() if k != "extra"},
        "normalize_activations": "none",
        "seed": seed,
        "extra": extra,
    }
    if spec.arch in ABLATIONS:
        fields["architecture"] = spec.arch  # a registered variant of the gated recipe (study_variants.py)
    return preset_config(ARCH_PRESETS[spec.arch], d, d * spec.expansion, **fields)


def train_fields(spec: SaeSpec, cfg: StudyConfig) -> dict[str, Any]:
    """Per-SAE TrainConfig fields: the preset's optimiser, the spec's lr, warm-ups scaled to the short run."""
    from alignlab.sae import preset_train_overrides

    out = {k: v for k, v in preset_train_overrides(ARCH_PRESETS[spec.arch]).items() if v is not None}
    if "l1_warmup_steps" in out:
        out["l1_warmup_steps"] = min(out["l1_warmup_steps"], cfg.steps // 5)
    # Bricken resampling fires at 25k+ steps and AuxK counts a latent dead after 10M tokens: neither happens
    # in a CPU-length run, so resampling is off and "dead" for AuxK means 10% of the run without firing.
    out.update(lr=spec.lr, resample=False, dead_window=max(cfg.batch_size, cfg.steps * cfg.batch_size // 10))
    return out


def group_id(specs: list[SaeSpec], cfg: StudyConfig) -> str:
    key = json.dumps({"names": [s.name for s in specs], "train": cfg.training_key()}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def result_path(root: Path, name: str) -> Path:
    return root / "saes" / name / "result.json"


def load_result(root: Path, name: str) -> dict[str, Any] | None:
    path = result_path(root, name)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise AlignlabError(f"{path} is corrupt; delete it to retrain that SAE") from None


def load_study_sae(root: Path, result: dict[str, Any]) -> SAE:
    from alignlab.sae import load_sae, study_variants

    del study_variants  # imported for its side effect: it registers the ablation architectures
    return load_sae(root / result["sae_dir"])


@torch.no_grad()
def heldout_metrics(sae: SAE, x: Tensor, chunk: int = 1024) -> dict[str, Any]:
    """L0, FVU, shrinkage and dead/dense fractions of ``sae`` on held-out (scaled) rows ``x`` [N, d]."""
    sae = sae.eval()
    n = x.shape[0]
    fires = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    l0 = sse = hh = hx = 0.0
    b = sae.b_dec.detach()
    for i in range(0, n, chunk):
        xb = x[i : i + chunk].float()
        f = sae.encode(xb)  # [m, d_sae]
        xh = sae.decode(f)  # [m, d]
        fires += (f != 0).sum(0, dtype=torch.float64)
        l0 += float((f != 0).sum(dtype=torch.float64))
        sse += float((xh - xb).double().pow(2).sum())
        hc, xc = (xh - b).double(), (xb - b).double()  # the part the latents reconstruct
        hh += float((hc * hc).sum())
        hx += float((hc * xc).sum())
    xd = x.double()
    total_var = float((xd - xd.mean(0)).pow(2).sum())
    freq = fires / n
    return {
        "l0": l0 / n,
        "fvu": sse / max(total_var, 1e-30),
        "mse": sse / n,
        "shrinkage_gamma": hh / hx
        if hx
        else None,  # argmin_g E||(x_hat - b)/g - (x - b)||^2 (arXiv 2404.16014 §4.2)
        "dead_frac": float((fires == 0).double().mean()),
        "dense_frac": float((freq > 0.1).double().mean()),
        "d_sae": sae.cfg.d_sae,
        "heldout_rows": n,
    }


@torch.no_grad()
def selection_score(sae: SAE, x: Tensor, metrics: dict[str, Any]) -> float:
    """Held-out value of the training objective at the run's final lambda and p (lower is better): how the
    lr sweep picks an lr. The TopK family (fixed k) is compared on FVU, its objective at fixed sparsity."""
    if sae.cfg.architecture in TOPK_FAMILY:
        return float(heldout_metrics(sae, x)["fvu"])
    state = TrainState(step=10**9, l1_coefficient=metrics.get("lambda"), p=metrics.get("p"))
    total = 0.0
    for i in range(0, x.shape[0], 1024):
        xb = x[i : i + 1024].float()
        total += float(sae.eval().loss(xb, state).total) * xb.shape[0]
    return total / x.shape[0]


def train_group(
    specs: list[SaeSpec],
    data: Tensor,
    heldout: Tensor,
    scale: float,
    cfg: StudyConfig,
    root: Path,
    meta: dict[str, Any],
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Train the unfinished ``specs`` together from one stream; return every spec's result record."""
    from alignlab.sae import build_sae, study_variants  # noqa: F401 - registers the ablation architectures
    from alignlab.sae.checkpoint import latest_checkpoint
    from alignlab.sae.trainer import TrainConfig, train_saes

    pending = [s for s in specs if load_result(root, s.name) is None]
    if pending:
        gdir = root / "train" / group_id(pending, cfg)
        saes: list[SAE] = []
        for s in pending:
            if s.arch == "rescale_shift":
                base = load_study_sae(root, _need(root, s.init_from))
                saes.append(
                    study_variants.RescaleShiftSAE.from_standard(
                        base, extra={**base.cfg.extra, "study": s.name}
                    )
                )
            else:
                saes.append(build_sae(sae_config(s, data.shape[1], cfg.seed, meta)))
        tcfg = TrainConfig(
            total_steps=cfg.steps,
            batch_size=cfg.batch_size,
            lr_warmup_steps=max(1, cfg.steps // 10),
            device=cfg.device,
            seed=cfg.seed,
            log_every=max(1, cfg.steps // 20),
            checkpoint_every=cfg.checkpoint_every,
            keep_checkpoints=1,
        )
        batches = ScaledBatches(data, cfg.batch_size, cfg.steps, scale, seed=cfg.seed)
        resume = latest_checkpoint(gdir) is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            results = train_saes(
                saes,
                batches,
                tcfg,
                out_dir=gdir,
                resume=resume,
                progress=progress,
                per_sae=[train_fields(s, cfg) for s in pending],
            )
        for s, res in zip(pending, results):
            sae = res.sae.cpu().eval()
            record = {
                "name": s.name,
                "spec": asdict(s),
                "train": res.metrics,
                "steps": res.steps,
                "tokens": res.tokens,
                "sae_dir": str(res.path.relative_to(root)),
                "heldout": heldout_metrics(sae, heldout),
                "selection_score": selection_score(sae, heldout, res.metrics),
            }
            record["train"].pop("log10_density_hist", None)
            write_json_atomic(result_path(root, s.name), record)
        shutil.rmtree(gdir / "checkpoints", ignore_errors=True)  # the final SAE folders stay
    return {s.name: _need(root, s.name) for s in specs}


def _need(root: Path, name: str | None) -> dict[str, Any]:
    res = load_result(root, name) if name else None
    if res is None:
        raise AlignlabError(f"the study needs the trained SAE {name!r} first; rerun the study")
    return res
