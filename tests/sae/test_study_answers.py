"""The question -> answer table is computed from the measured points (issue 17 acceptance)."""

from __future__ import annotations

import math

import pytest

from alignlab.sae import study_answers as qa


def _curve(arch: str, l0s, fvus, ces=None, gammas=None):
    ces = ces or [None] * len(l0s)
    gammas = gammas or [1.0] * len(l0s)
    return [
        {
            "name": f"{arch}{i}",
            "arch": arch,
            "l0": l0,
            "fvu": f,
            "ce": c,
            "shrinkage_gamma": g,
            "dead_frac": 0.1 * i,
            "dense_frac": 0.0,
        }
        for i, (l0, f, c, g) in enumerate(zip(l0s, fvus, ces, gammas))
    ]


def test_value_at_interpolates_in_log_l0_and_falls_back_to_the_nearest_point():
    pts = _curve("a", [10, 40], [0.2, 0.1])
    v, how = qa.value_at(pts, 20)
    assert how == "interpolated" and v == pytest.approx(0.15)  # log2(20/10) / log2(40/10) = 1/2
    v, how = qa.value_at(pts, 100)
    assert v == 0.1 and how.startswith("nearest")
    assert qa.common_l0(_curve("a", [10, 40], [1, 1]), _curve("b", [20, 80], [1, 1])) == pytest.approx(
        math.sqrt(20 * 40)
    )
    assert qa.common_l0(_curve("a", [1, 2], [1, 1]), _curve("b", [5, 9], [1, 1])) is None


def test_ablation_verdicts_follow_the_numbers():
    gated = _curve("gated", [10, 40], [0.20, 0.10], ces=[0.9, 0.95])
    worse = _curve("v", [10, 40], [0.24, 0.12], ces=[0.85, 0.9])
    same = _curve("v", [10, 40], [0.201, 0.1005])
    out = qa.ablation_answer({"gated": gated, "v": worse}, "v", "removing it", "worse")
    assert out["rel_fvu_change"] == pytest.approx(0.2)
    assert out["answer"].startswith("yes: removing it raises FVU by 20.0%")
    assert out["matched"]["ce"]["values"]["v"]["value"] == pytest.approx(0.875)
    assert qa.ablation_answer({"gated": gated, "v": worse}, "v", "untying", "better")["answer"].startswith(
        "no:"
    )
    assert qa.ablation_answer({"gated": gated, "v": same}, "v", "x", "worse")["answer"].startswith(
        "no measurable"
    )


def test_rescale_shift_gap_closed_and_gamma():
    fr = {
        "standard": _curve("standard", [10, 40], [0.30, 0.20], gammas=[1.3, 1.3]),
        "rescale_shift": _curve("rescale_shift", [10, 40], [0.25, 0.15], gammas=[1.0, 1.0]),
        "gated": _curve("gated", [10, 40], [0.20, 0.10], gammas=[1.02, 1.02]),
    }
    out = qa.rescale_answer(fr)
    assert out["gap_closed"] == pytest.approx(0.5)
    assert "closes 50%" in out["answer"] and "1.300 -> 1.000" in out["answer"]
    assert out["answer"].startswith("yes: shrinkage resolved") and out["shrinkage_resolved"]
    assert out["rel_fvu_vs_gated"] == pytest.approx(0.2 / 0.15 - 1)  # at L0 20: 0.2 vs 0.15
    fr["rescale_shift"] = _curve("rescale_shift", [10, 40], [0.20, 0.10], gammas=[1.2, 1.2])
    assert qa.rescale_answer(fr)["answer"].startswith("no: shrinkage not resolved")


def test_lr_answer_reports_the_ratio_with_and_without_the_sweep():
    default = {
        "standard": _curve("standard", [10, 40], [0.4, 0.2]),
        "gated": _curve("gated", [10, 40], [0.2, 0.1]),
    }
    swept = {
        "standard": _curve("standard", [10, 40], [0.2, 0.1]),
        "gated": _curve("gated", [10, 40], [0.2, 0.1]),
    }
    out = qa.lr_answer({"standard": 1e-3, "gated": 3e-4}, default, swept, 3e-4)
    assert out["without_sweep"]["gated_over_standard_fvu"] == pytest.approx(0.5)
    assert out["with_sweep"]["gated_over_standard_fvu"] == pytest.approx(1.0)
    assert "0.500 with lr 0.0003 for both, 1.000 with each at its best lr" in out["answer"]


def test_width_answer_finds_the_standard_width_that_matches_gated():
    w = {
        "standard": {
            4: _curve("s", [10, 40], [0.3, 0.2]),
            8: _curve("s", [10, 40], [0.25, 0.15]),
            16: _curve("s", [10, 40], [0.2, 0.1]),
        },
        "gated": {4: _curve("g", [10, 40], [0.2, 0.1]), 8: _curve("g", [10, 40], [0.15, 0.08])},
    }
    out = qa.width_answer(w, 4)
    assert out["standard_width_matching_gated_base"] == 16
    assert out["table"]["gated"]["8"]["fvu"] == pytest.approx(0.115)  # interpolated at L0 20


def test_stability_and_probing_answers_quote_the_counts():
    def run(p, eps, bad, gmax):
        return {
            "name": f"p={p:g}" + (f"_eps={eps:g}" if eps else ""),
            "p": p,
            "eps": eps,
            "nonfinite_steps": bad,
            "died": 7,
            "max_grad_norm": gmax,
            "median_grad_norm": 1.0,
            "clipped_frac": 0.5,
            "lambda": 0.1,
            "heldout": {"fvu": 0.2, "l0": 5.0},
        }

    runs = [run(1.0, 0.0, 0, 2.0), run(0.2, 0.0, 3, 12.5), run(0.2, 1e-3, 0, 3.0)]
    out = qa.stability_answer(runs)
    assert "p=0.2: 3 non-finite steps, 7 latents died, max grad norm 12.5" in out["answer"]
    assert out["answer"].startswith("yes:") and out["nonfinite_p_lt_1"] == 3
    assert out["max_grad_ratio"] == pytest.approx(6.25)
    calm = qa.stability_answer([run(1.0, 0.0, 0, 2.0), run(0.5, 0.0, 0, 4.0)])
    assert calm["answer"].startswith("no explosion") and calm["max_grad_ratio"] == pytest.approx(2.0)
    assert qa.stability_answer([run(1.0, 0.0, 0, 2.0), run(0.5, 0.0, 0, 40.0)])["answer"].startswith("yes:")
    probe = {
        "dense_mean": 0.95,
        "saes": {"a": {"mean_acc": {"1": 0.7, "4": 0.8}}, "b": {"mean_acc": {"1": 0.75, "4": 0.78}}},
    }
    out = qa.probing_answer(probe)
    assert out["best_per_k"] == {1: "b", 4: "a"}
    assert "k=1: best b 0.750" in out["answer"] and "0.950" in out["answer"]
