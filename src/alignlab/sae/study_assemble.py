"""study.json of ``alignlab sae study``: the measured points, and one entry per question with its answer and the
compared SAEs' (L0, CE recovered, FVU) points (issue 17 acceptance)."""

from __future__ import annotations

from typing import Any

from alignlab.sae import study_answers as answers
from alignlab.sae.study_config import StudyConfig, setting_label


def point(res: dict[str, Any], ce: dict[str, float | None]) -> dict[str, Any]:
    h, spec = res["heldout"], res["spec"]
    return {
        "name": res["name"],
        "arch": spec["arch"],
        "setting": setting_label(spec["setting"]),
        "lr": spec["lr"],
        "expansion": spec["expansion"],
        "l0": h["l0"],
        "fvu": h["fvu"],
        "ce": ce.get(res["name"]),
        "dead_frac": h["dead_frac"],
        "dense_frac": h["dense_frac"],
        "shrinkage_gamma": h["shrinkage_gamma"],
        "selection_score": res.get("selection_score"),
        "p_final": res.get("train", {}).get("p"),
    }


def assemble(
    st: Any, best_lr, sweep, results, default_fr, best_fr, width_names, stability, ce, probe
) -> dict[str, Any]:
    cfg = st.cfg
    pts = {n: point(r, ce) for n, r in results.items()}
    default = {a: [pts[n] for n in names] for a, names in default_fr.items()}
    best = {a: [pts[n] for n in names] for a, names in best_fr.items()}
    widths = {a: {w: [pts[n] for n in names] for w, names in per.items()} for a, per in width_names.items()}
    qa = [
        {
            "id": "frontiers",
            "question": "Which architecture has the best sparsity/fidelity frontier on this model?",
            **answers.frontier_answer(best, list(cfg.archs)),
        },
        {
            "id": "b_mag",
            "question": "Is b_mag still necessary in the gated autoencoder?",
            **answers.ablation_answer(best, "gated_no_bmag", "tying b_mag to b_gate", "worse"),
        },
        {
            "id": "lr_sweep",
            "question": "Did you sweep learning rates for the baseline and your approach?",
            **answers.lr_answer(best_lr, default, best, cfg.default_lr),
        },
        {
            "id": "width",
            "question": "How large is the dictionary of the autoencoder (and does width change the "
            "gated vs standard comparison)?",
            **answers.width_answer(widths, cfg.expansion),
        },
        {
            "id": "rescale_shift",
            "question": "Does 'baseline + rescale & shift' resolve shrinkage but not capture "
            "all the benefits of Gated SAEs?",
            **answers.rescale_answer(best),
        },
        {
            "id": "untied_mag",
            "question": "Does a separate W_mag (no r_mag tying) help the gated SAE?",
            **answers.ablation_answer(best, "gated_untied_mag", "untying W_mag", "better"),
        },
        {
            "id": "no_aux",
            "question": "Is the gated auxiliary loss needed?",
            **answers.ablation_answer(best, "gated_no_aux", "dropping the auxiliary loss", "worse"),
        },
        {
            "id": "lp_pareto",
            "question": "Is the L_p (p < 1, sqrt) penalty a Pareto improvement over L1?",
            **answers.ablation_answer(
                best, "lp", "the annealed L_p penalty (p 1 -> 0.5) instead of L1", "better", "standard"
            ),
        },
        {
            "id": "lp_stability",
            "question": "Does the L_p gradient explode near zero and make training unstable?",
            **answers.stability_answer(stability),
        },
        {
            "id": "probing",
            "question": "How well do single latents (k-sparse probes) find Python token classes?",
            **answers.probing_answer(probe or {}),
        },
    ]
    curves = _question_curves(cfg, pts, best, default, widths, sweep, stability, probe)
    for entry in qa:
        entry["points"] = {label: [_slim(p) for p in c] for label, c in curves[entry["id"]].items()}
    return {
        "format": "alignlab-sae-study/1",
        "config": cfg.to_dict(),
        "activations": st.meta["extra"]["dataset_path"],
        "model": st.meta["model"],
        "hook": st.manifest.get("hook"),
        "d_model": st.d,
        "input_scale": st.scale,
        "train_rows": int(st.train.shape[0]),
        "heldout_rows": int(st.held.shape[0]),
        "outliers": st.outliers,
        "rel_tol": answers.REL_TOL,
        "best_lr": best_lr,
        "lr_sweep": sweep,
        "frontier_default_lr": default,
        "frontier_best_lr": best,
        "width": {a: {str(w): v for w, v in per.items()} for a, per in widths.items()},
        "stability": stability,
        "probing": probe,
        "ce_measured": bool(ce),
        "answers": qa,
        "notes": _notes(cfg, ce, probe),
    }


def _slim(p: dict[str, Any]) -> dict[str, Any]:
    return {k: p.get(k) for k in ("name", "l0", "ce", "fvu", "setting", "lr", "expansion")}


def _question_curves(
    cfg: StudyConfig, pts, best, default, widths, sweep, stability, probe
) -> dict[str, dict]:
    """question id -> {curve label: points}: the SAEs each answer compares (written next to the answer)."""
    pick = lambda *archs: {a: best.get(a, []) for a in archs}  # noqa: E731
    lr = {f"{a} lr={cfg.default_lr:g}": default[a] for a in default}
    lr.update({f"{a} best lr": best[a] for a in default if a in best})
    lr.update({f"{a} sweep": v["points"] for a, v in sweep.items()})
    stab = {
        r["name"]: [{"name": r["name"], "l0": r["heldout"]["l0"], "fvu": r["heldout"]["fvu"]}]
        for r in stability
    }
    probed = {a: [pts[r["name"]]] for a, r in (probe or {}).get("saes", {}).items() if r["name"] in pts}
    return {
        "frontiers": pick(*cfg.archs),
        "b_mag": pick("gated", "gated_no_bmag"),
        "lr_sweep": lr,
        "width": {f"{a} x{w}": v for a, per in widths.items() for w, v in per.items()},
        "rescale_shift": pick("standard", "rescale_shift", "gated"),
        "untied_mag": pick("gated", "gated_untied_mag"),
        "no_aux": pick("gated", "gated_no_aux"),
        "lp_pareto": pick("standard", "lp"),
        "lp_stability": stab,
        "probing": probed,
    }


def _notes(cfg: StudyConfig, ce: dict[str, Any], probe: Any) -> list[str]:
    notes = [
        f"Each SAE trained {cfg.steps} steps x {cfg.batch_size} tokens ({cfg.steps * cfg.batch_size:,} tokens), "
        "far shorter than the papers' ~1B tokens; no dead-latent resampling.",
        f"Matched-L0 comparisons interpolate in log L0; differences under {100 * answers.REL_TOL:.0f}% relative "
        "FVU count as equal.",
        "JumpReLU's swept setting is the L0 coefficient lambda (theta itself is trained).",
        "Rows above StudyConfig.outlier_norm x the median norm (massive-activation tokens) are left out of "
        "training and held-out metrics and passed through unchanged in the CE splice.",
    ]
    if not ce:
        notes.append("CE loss recovered not measured (no language model).")
    if probe is None:
        notes.append("Sparse probing not measured (no language model).")
    return notes
