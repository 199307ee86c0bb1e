"""``alignlab sae study``: the Gated-SAE / sqrt-penalty questions of the announcement thread, measured (issue 17).

Stages, each resumable (finished SAEs are skipped, an interrupted group resumes from its checkpoint):

1. lr sweep: every architecture at its middle sparsity setting and each of ``cfg.lrs``; the best lr is the
   one with the lowest held-out training objective (FVU for the fixed-k TopK family).
2. frontiers: every setting at each architecture's best lr, and for ``no_sweep_archs`` also at the one
   default lr (the "without sweep" frontier of the lr question).
3. gated ablations at the gated best lr; baseline + rescale & shift from the standard best-lr frontier.
4. width: gated and standard at each width and two sparsity settings, compared at a matched L0.
5. L_p stability runs; 6. CE loss recovered and sparse probing (when a language model is given).

Everything lands in ``study.json`` (points, answers, timings) and a self-contained ``study.html``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignlab.errors import AlignlabError
from alignlab.io import ensure_dir, write_json_atomic
from alignlab.sae.study_assemble import assemble, point
from alignlab.sae.study_config import ABLATIONS, StudyConfig
from alignlab.sae.study_train import SaeSpec, ScaledBatches, heldout_metrics, train_group

CONFIG_FILE = "study_config.json"


def _check_config(root: Path, cfg: StudyConfig, acts: str) -> None:
    """A study folder holds one study: refuse settings that would mix SAEs trained differently."""
    path = root / CONFIG_FILE
    key = {"training": cfg.training_key(), "acts": str(Path(acts).resolve())}
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("key") != json.loads(json.dumps(key)):
            raise AlignlabError(
                f"{root} holds a study with other training settings or activations; pass another "
                "--out, or the same settings to resume it"
            )
    write_json_atomic(path, {"key": key, "config": cfg.to_dict()})


def _input_scale(train: Tensor) -> float:
    """s = 1 / sqrt(E||x||^2) over the training rows (the unit_mean_sq convention, spec §3.5)."""
    sq = sum(float(train[i : i + 65536].double().pow(2).sum()) for i in range(0, train.shape[0], 65536))
    return 1.0 / math.sqrt(max(sq / train.shape[0], 1e-24))


def drop_outliers(data: Tensor, multiple: float) -> tuple[Tensor, dict[str, Any]]:
    """``data`` [N, d] without the rows whose norm exceeds ``multiple`` x the median row norm, and a record of
    what was dropped (the limit is in raw activation units; the CE splice passes such rows through)."""
    norms = torch.cat(
        [data[i : i + 65536].float().norm(dim=1) for i in range(0, data.shape[0], 65536)]
    )  # [N]
    limit = multiple * float(norms.median())
    keep = norms <= limit
    dropped = int((~keep).sum())
    record = {
        "rows_dropped": dropped,
        "rows_total": int(data.shape[0]),
        "norm_limit": limit,
        "median_norm": float(norms.median()),
        "max_norm": float(norms.max()),
        "multiple": multiple,
    }
    return (data[keep] if dropped else data), record


class _Study:
    def __init__(
        self, acts: str, root: Path, cfg: StudyConfig, log: Callable[[str], None], progress: bool
    ) -> None:
        from alignlab.sae.cache import ActivationCache

        self.cfg, self.root, self.log, self.progress = cfg, root, log, progress
        cache = ActivationCache(acts)
        self.manifest = cache.manifest
        need = cfg.heldout_rows + 2 * cfg.batch_size
        if cache.n_tokens < need:
            raise AlignlabError(
                f"{acts} holds {cache.n_tokens} activations; the study needs >= {need} "
                f"(held-out {cfg.heldout_rows} + 2 batches of {cfg.batch_size}); cache more tokens"
            )
        data = cache.load_all()  # [N, d] in the cache dtype (bf16 by default: half the memory)
        data, self.outliers = drop_outliers(data, cfg.outlier_norm)
        if data.shape[0] < need:
            raise AlignlabError(
                f"{acts} keeps {data.shape[0]} activations after dropping outlier rows; the study "
                f"needs >= {need}"
            )
        self.train, held_raw = data[: -cfg.heldout_rows], data[-cfg.heldout_rows :]
        self.scale = _input_scale(self.train)
        self.held = held_raw.float() * self.scale  # [h, d]
        self.d = cache.d
        self.meta = {
            "model": self.manifest.get("model", ""),
            "hook_point": self.manifest.get("hook", "resid_post"),
            "hook_layer": int(self.manifest.get("layer", -1)),
            "context_size": int(self.manifest.get("context_size", 128)),
            "extra": {
                "study_input_scale": self.scale,
                "dataset_path": str(acts),
                "note": "trained on activations multiplied by study_input_scale",
            },
        }

    def group(self, specs: list[SaeSpec], what: str) -> dict[str, dict[str, Any]]:
        from alignlab.sae.study_train import load_result

        todo = sum(load_result(self.root, s.name) is None for s in specs)
        if todo:
            self.log(
                f"{what}: training {todo} of {len(specs)} SAEs ({self.cfg.steps} steps x {self.cfg.batch_size} tokens)"
            )
        return train_group(
            specs, self.train, self.held, self.scale, self.cfg, self.root, self.meta, self.progress
        )

    def best_lrs(self) -> tuple[dict[str, float], dict[str, Any]]:
        best, table = {}, {}
        for arch in self.cfg.archs:
            grid = self.cfg.sparsity[arch]
            specs = [
                SaeSpec("sweep", arch, grid[len(grid) // 2], lr, self.cfg.expansion) for lr in self.cfg.lrs
            ]
            res = self.group(specs, f"lr sweep {arch}")
            scores = {s.lr: res[s.name]["selection_score"] for s in specs}
            best[arch] = min(scores, key=lambda lr: scores[lr] if math.isfinite(scores[lr]) else math.inf)
            table[arch] = {
                "setting": dict(specs[0].setting),
                "scores": {f"{k:g}": v for k, v in scores.items()},
                "points": [point(res[s.name], {}) for s in specs],
            }
        return best, table

    def frontier(
        self,
        arch: str,
        lrs: set[float],
        expansion: int | None = None,
        settings: tuple[dict[str, Any], ...] | None = None,
        init: dict[str, str] | None = None,
    ):
        grid = settings if settings is not None else self.cfg.sparsity[arch]
        specs = [
            SaeSpec(
                "frontier",
                arch,
                s,
                lr,
                expansion or self.cfg.expansion,
                init_from=(init or {}).get(str(sorted(s.items()))),
            )
            for lr in sorted(lrs)
            for s in grid
        ]
        return specs, self.group(
            specs, f"{arch} x{expansion or self.cfg.expansion} lr {', '.join(f'{x:g}' for x in sorted(lrs))}"
        )

    def stability(self) -> list[dict[str, Any]]:
        from alignlab.sae.study_stability import StabilityRun, run_stability

        cfg, out = self.cfg, []
        grid = cfg.sparsity["standard"]
        lam = grid[len(grid) // 2]["l1_coefficient"]
        for p in cfg.stability_ps:
            for eps in (0.0, cfg.stability_eps):
                run = StabilityRun(p, eps)
                path = self.root / "stability" / f"{run.name}.json"
                if path.is_file():
                    out.append(json.loads(path.read_text(encoding="utf-8")))
                    continue
                if p == 1.0 and eps:  # (f + eps)^1 - eps^1 = f: the same run as without smoothing
                    out.append({**out[-1], "name": run.name, "eps": eps, "same_as": out[-1]["name"]})
                    continue
                self.log(f"L_p stability run {run.name} ({cfg.stability_steps} steps)")
                batches = ScaledBatches(
                    self.train, cfg.batch_size, cfg.stability_steps, self.scale, seed=cfg.seed
                )
                rec = run_stability(
                    run,
                    batches,
                    self.d,
                    self.d * cfg.expansion,
                    cfg.stability_steps,
                    lam,
                    cfg.default_lr,
                    cfg.seed,
                    self.held,
                )
                write_json_atomic(path, rec)
                out.append(rec)
        return out


def run_study(
    acts: str | Path,
    out: str | Path,
    cfg: StudyConfig,
    *,
    lm: Any = None,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the study on the activation cache ``acts``; write study.json / study.html under ``out``.

    ``lm``: a loaded model (``alignlab.models.load_model``) for CE loss recovered and sparse probing; without it
    both are skipped and reported as not measured.
    """
    from alignlab.sae import study_variants  # noqa: F401 - registers the ablation architectures

    t0, cpu0 = time.perf_counter(), time.process_time()
    root = ensure_dir(Path(out).resolve())
    _check_config(root, cfg, str(acts))
    torch.manual_seed(cfg.seed)
    st = _Study(str(acts), root, cfg, log, progress)
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 1)
        return now

    t = time.perf_counter()
    best_lr, sweep = st.best_lrs()
    t = lap("lr_sweep", t)
    default_fr: dict[str, list[str]] = {}
    best_fr: dict[str, list[str]] = {}
    results: dict[str, dict[str, Any]] = {}
    for arch in cfg.archs:
        lrs = {best_lr[arch]} | ({cfg.default_lr} if arch in cfg.no_sweep_archs else set())
        specs, res = st.frontier(arch, lrs)
        results.update(res)
        if arch in cfg.no_sweep_archs:
            default_fr[arch] = [s.name for s in specs if s.lr == cfg.default_lr]
        best_fr[arch] = [s.name for s in specs if s.lr == best_lr[arch]]
    t = lap("frontiers", t)
    gated_lr = best_lr.get("gated", cfg.default_lr)
    for variant in ABLATIONS:
        specs, res = st.frontier(variant, {gated_lr})
        results.update(res)
        best_fr[variant] = [s.name for s in specs]
    if "standard" in best_fr:
        std = {str(sorted(results[n]["spec"]["setting"].items())): n for n in best_fr["standard"]}
        specs, res = st.frontier("rescale_shift", {cfg.rescale_lr}, init=std)
        results.update(res)
        best_fr["rescale_shift"] = [s.name for s in specs]
    t = lap("ablations", t)
    width_names: dict[str, dict[int, list[str]]] = {}
    for arch in cfg.width_archs:
        grid = cfg.sparsity[arch]
        width_names[arch] = {}
        for w in cfg.widths:
            specs, res = st.frontier(arch, {best_lr.get(arch, cfg.default_lr)}, w, grid[1:3])
            results.update(res)
            width_names[arch][w] = [s.name for s in specs]
    t = lap("width", t)
    stability = st.stability()
    t = lap("stability", t)
    ce, probe = _lm_stage(st, results, best_fr, lm, timings)
    study = assemble(st, best_lr, sweep, results, default_fr, best_fr, width_names, stability, ce, probe)
    timings["total_this_run"] = round(time.perf_counter() - t0, 1)
    timings["cpu_this_run"] = round(
        time.process_time() - cpu0, 1
    )  # CPU seconds (all threads) of this process
    study["timings_s"] = timings
    write_json_atomic(root / "study.json", study)
    from alignlab.sae.study_report import write_report

    write_report(root / "study.html", study)
    return study


def _lm_stage(
    st: _Study,
    results: dict[str, dict[str, Any]],
    best_fr: dict[str, list[str]],
    lm: Any,
    timings: dict[str, float],
) -> tuple[dict[str, float | None], dict[str, Any] | None]:
    if lm is None:
        return {}, None
    from alignlab.models.anatomy import map_model
    from alignlab.sae.activations import parse_hook
    from alignlab.sae.study_lm import ce_recovered, probe_data, run_probes

    cfg = st.cfg
    hook = parse_hook(
        str(st.manifest.get("hook", "resid_post")),
        int(st.manifest.get("layer", -1)),
        map_model(lm.model).n_layers,
    )
    t = time.perf_counter()
    limit = st.outliers["norm_limit"]
    ce = (
        ce_recovered(st.root, results, lm, hook, st.manifest, st.scale, cfg, st.log, passthrough_norm=limit)
        if cfg.ce_tokens
        else {}
    )
    timings["ce_eval"] = round(time.perf_counter() - t, 1)
    probe = None
    if cfg.probe_tokens:
        t = time.perf_counter()
        data = probe_data(st.root, lm, hook, cfg, int(st.manifest.get("context_size", 128)))
        chosen = {}
        for arch in cfg.archs:
            pts = [results[n] for n in best_fr.get(arch, [])]
            if pts:
                chosen[arch] = min(
                    pts, key=lambda r: abs(math.log(max(r["heldout"]["l0"], 1e-3) / cfg.probe_l0))
                )
        probe = run_probes(st.root, data, chosen, st.scale, cfg, st.log)
        timings["probing"] = round(time.perf_counter() - t, 1)
    return ce, probe


__all__ = ["heldout_metrics", "run_study"]
