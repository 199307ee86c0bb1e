"""The refusal/KL search on a tiny model: Pareto front, choice, report keys, resume equals uninterrupted."""

import json

import pytest

from alignlab.cli import main
from alignlab.refusal.search import Confirmed, choose, pareto_front, to_confirm
from alignlab.refusal.search_space import SearchConfig, decode

SMALL = ["--n-train", "6", "--n-val", "4", "--n-test-harmful", "3", "--n-test-harmless", "3",
         "--eval-max-new-tokens", "6", "--eval-allow-short", "--induce-min=-1e9",
         "--screen-n", "2", "--full-k", "3", "--batch-size", "8", "--device", "cpu", "--no-export",
         "--search-startup-trials", "3", "--search-n-prompts", "4", "--search-prefix-tokens", "3",
         "--search-confirm-k", "2", "--search-confirm-tokens", "4"]


class _T:
    def __init__(self, number, refusal, kl):
        self.number, self.values, self.params = number, [refusal, kl], {}


def test_pareto_front_keeps_only_non_dominated():
    trials = [_T(0, 0.0, 0.5), _T(1, 0.1, 0.2), _T(2, 0.1, 0.3), _T(3, 0.5, 0.05), _T(4, 0.6, 0.06)]
    assert [t.number for t in pareto_front(trials)] == [3, 1, 0]


def test_to_confirm_prefers_low_kl_near_target():
    cfg = SearchConfig(refusal_target=0.05, confirm_k=2)
    front = [_T(3, 0.5, 0.05), _T(1, 0.25, 0.2), _T(0, 0.0, 0.5)]
    assert [t.number for t in to_confirm(front, cfg, n_prompts=4)] == [1, 0]  # 0.25 is within one prompt of 0.05
    assert [t.number for t in to_confirm(front, cfg, n_prompts=32)] == [0]


def test_choose_lowest_kl_meeting_target_else_lowest_refusal():
    cfg = SearchConfig(refusal_target=0.05)
    a = Confirmed(1, 0.03, (0, 0.1), 0.0, 0.30, 0.0)
    b = Confirmed(2, 0.00, (0, 0.1), 0.0, 0.50, 0.0)
    c = Confirmed(3, 0.20, (0, 0.4), 0.0, 0.10, 0.0)
    assert choose([a, b, c], 0.0, cfg)[0] is a
    degenerate = Confirmed(4, 0.0, (0, 0.1), 0.5, 0.01, 0.0)
    assert choose([a, degenerate], 0.0, cfg)[0] is a  # a degenerate point is never chosen over a fluent one
    best, line = choose([c], 0.0, cfg)
    assert best is c and "no confirmed point" in line


def test_decode_kernel_params():
    params = {"attn_max": 0.8, "attn_peak": 1.0, "attn_min_frac": 0.5, "attn_falloff": 1.0,
              "mlp_max": 1.0, "mlp_peak": 0.0, "mlp_min_frac": 0.0, "mlp_falloff": 2.0, "embed": 0.25,
              "direction_index": 1.4}
    point = decode(params, 3, fixed_layer=0)
    assert point.weights.attn == pytest.approx((0.4, 0.8, 0.4))
    assert point.weights.mlp == pytest.approx((1.0, 0.5, 0.0))
    assert point.weights.embed == 0.25 and point.layer() == 1


@pytest.fixture(scope="module")
def searched(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "run"
    assert main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL, "--select", "search",
                 "--search-trials", "6"]) == 0
    return out


def test_search_run_reports_pareto_and_chosen(searched):
    report = json.loads((searched / "report.json").read_text())
    assert report["selection_method"] == "search"
    assert report["pareto"] and all({"refusal", "kl", "confirmed"} <= set(p) for p in report["pareto"])
    assert any(p["confirmed"] for p in report["pareto"])
    search = json.loads((searched / "search.json").read_text())
    assert len(search["trials"]) == 6
    first = search["trials"][0]["params"]  # the RD direction at full ablation is tried first
    assert first["attn_max"] == 1.0 and first["attn_min_frac"] == 1.0 and first["embed"] == 1.0
    assert report["chosen"]["trial"] in {t["number"] for t in search["trials"]}
    assert report["exact_equivalence"] is True and report["edit_max_abs_logit_diff"] < 1e-4  # weighted edit
    html = (searched / "report.html").read_text()
    assert "Refusal vs KL" in html and "ablation weights per layer" in html


def _trials(out):
    return [(t["number"], t["refusal"], t["kl"], t["params"]) for t in
            json.loads((out / "search.json").read_text())["trials"]]


def test_search_resumes_and_equals_uninterrupted(searched, tiny_dir, tmp_path, monkeypatch):
    from alignlab.refusal import search_space

    out = tmp_path / "resumed"
    calls = {"n": 0}
    real = search_space.TrialScorer.score

    def flaky(self, point):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed in the middle of trial 4
        return real(self, point)

    monkeypatch.setattr(search_space.TrialScorer, "score", flaky)
    args = ["refusal", "search", str(tiny_dir), "--out", str(out), *SMALL, "--search-trials", "6"]
    assert main(args) == 130
    monkeypatch.setattr(search_space.TrialScorer, "score", real)
    assert main(args) == 0
    resumed = [t[1:] for t in _trials(out)]
    assert resumed == [t[1:] for t in _trials(searched)]
    assert main([*args[:-1], "8"]) == 0  # more trials later: continues the stored study
    assert len(_trials(out)) == 8 and [t[1:] for t in _trials(out)][:6] == resumed


def test_search_seed_skips_candidates_that_wreck_the_model():
    from alignlab.refusal.config import SelectConfig
    from alignlab.refusal.search_stage import search_seed

    def cand(pos, layer, bypass, induce, kl):
        return {"position": pos, "layer": layer, "bypass": bypass, "induce": induce, "kl": kl, "stage": "full"}

    wreck = cand(-6, 23, -11.9, -5.2, 12.4)
    finalists = [wreck, cand(-1, 20, -1.24, 1.55, 0.43), cand(-1, 21, -7.9, 1.2, 3.4)]
    selection = {"chosen": None, "best_bypass": wreck, "finalists": finalists}
    seed = search_seed(selection, SelectConfig())
    assert (seed.position, seed.layer) == (-1, 20)
    only_bad = {"chosen": None, "best_bypass": wreck, "finalists": [wreck, cand(-1, 21, -7.9, 1.2, 3.4)]}
    assert search_seed(only_bad, SelectConfig()).layer == 21  # lowest KL when none is sane
    # none sane: a low-KL candidate that cannot induce refusal loses to one that can (the added condition)
    quiet = cand(-5, 18, 1.0, -0.78, 0.27)
    mixed = {"chosen": None, "best_bypass": wreck, "finalists": [quiet, wreck, cand(-1, 22, -3.9, 1.1, 1.5),
                                                                   cand(-1, 23, -4.7, 1.2, 2.1)]}
    assert (search_seed(mixed, SelectConfig()).position, search_seed(mixed, SelectConfig()).layer) == (-1, 22)
    no_inducer = {"chosen": None, "best_bypass": wreck, "finalists": [quiet, wreck]}
    assert search_seed(no_inducer, SelectConfig()).layer == 18  # then the lowest KL
    rd = cand(-2, 7, -1.0, 1.0, 0.05)
    assert search_seed({"chosen": rd, "best_bypass": rd}, SelectConfig()).layer == 7


def test_subspace_after_a_weighted_search_pick_grows_from_nothing(searched, tiny_dir, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(searched, out)
    assert main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL, "--select", "search",
                 "--search-trials", "6", "--subspace-rank", "2", "--subspace-kl-max", "100"]) == 0
    report = json.loads((out / "report.json").read_text())
    sel = report["selected"]
    assert "search" in report["reused_stages"] and report["selection_method"] == "search"
    assert sel["subspace_rank"] == 2 and sel["subspace_seeded"] is False and "weights" not in sel
    first, second = sel["subspace_members"]
    assert (sel["layer"], sel["position"]) == (first["layer"], first["position"])  # the first member leads
    assert report["exact_equivalence"] is True and report["edit_max_abs_logit_diff"] < 1e-3
    sub = json.loads((out / "subspace.json").read_text())
    assert sub["start"]["weighted"] is True and [s["rank"] for s in sub["steps"]] == [1, 2]
    assert "grown from nothing" in (out / "report.md").read_text()
