"""A short `refusal run` on the Gemma-3 organism (``integration``: the real model, offline; issue 15 §5).

Gemma-3 puts a norm after each sublayer, so the weight edit is approximate and the report must say so with the
measured gap; its residual stream carries massive activations, which the run keeps out of the direction.
"""

import json

import pytest

from alignlab.cli import main

pytestmark = pytest.mark.integration


def test_short_refusal_run_on_the_gemma_organism(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    args = ["refusal", "run", "gemma3-270m-refusal", "--out", str(out), "--device", "cpu", "--select", "rd",
            "--n-train", "16", "--n-val", "8", "--n-test-harmful", "4", "--n-test-harmless", "4",
            "--screen-n", "2", "--full-k", "2", "--kl-max", "100", "--induce-min=-1e9",
            "--eval-max-new-tokens", "8", "--eval-allow-short", "--no-export", "--subspace-rank", "1"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["exact_equivalence"] is False and report["edit_max_abs_logit_diff"] > 0
    assert report["edit"]["policy"] == "approximate"
    # the two largest massive-activation coordinates of Gemma-3-270M's residual stream (1000x+ the median)
    assert {163, 400} <= set(report["massive_dims"]) and len(report["massive_dims"]) <= 12
    direction = load_file(str(out / "direction.safetensors"))["direction"]
    assert float(direction[report["massive_dims"]].abs().max()) == 0.0
    assert report["template"]["n_eoi"] == 5  # <end_of_turn> \n <start_of_turn> model \n
    for cond in ("base", "ablated", "edited", "added"):
        assert 0.0 <= report["refusal_rate"][cond]["harmful"] <= 1.0
