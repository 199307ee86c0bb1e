"""`forecast timeline|compare|sensitivity` and the maths options on every command (issue 18)."""

import json

import numpy as np
import pytest

from alignlab.cli import main
from alignlab.forecast.distributions import DistributionCI
from alignlab.forecast.sensitivity import PinnedCI


def _run(capsys, *argv):
    rc = main(["forecast", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_acceptance_timeline_k_units_and_inline_inputs(capsys):
    rc, out, err = _run(
        capsys,
        "timeline",
        "--k-units",
        "nats",
        "--inputs",
        '{"decay_exponent": 0.5}',
        "--samples",
        "2000",
        "--json",
    )
    assert rc == 0 and err == ""
    rec = json.loads(out)
    assert rec["overrides"] == {"decay_exponent": 0.5} and rec["maths_overrides"] == {"k_units": "nats"}
    assert rec["preset"] == "head" and rec["seed"] == 0 and rec["samples"] == 2000
    assert rec["requirement_inputs"]["decay_exponent"] == 0.5
    assert list(rec["modes"]) == ["reference", "corrected", "custom"]
    custom = rec["modes"]["custom"]
    assert custom["maths"]["k_units"] == "nats" and custom["maths"]["g_formula"] == "hoffmann"
    curve = custom["arrival_curve"]
    assert curve["years"][0] == 2023 and curve["years"][-1] == 2100 and len(curve["p_exceed_pct"]) == 78
    assert curve["p_exceed_pct"][7] == pytest.approx(custom["probabilities_pct_exact"]["2030"])
    pct = custom["requirement_percentiles"]["updated_scaled"]
    assert list(pct) == ["p1", "p5", "p10", "p25", "p50", "p75", "p90", "p95", "p99"]
    assert pct["p1"] < pct["p50"] < pct["p99"] and 30 < pct["p50"] < 34
    # k units nats + Hoffmann G + closed form is the corrected maths: same seed, same numbers
    assert custom["probabilities_pct_exact"] == rec["modes"]["corrected"]["probabilities_pct_exact"]


def test_header_records_overrides(capsys, tmp_path):
    rc, out, _ = _run(
        capsys,
        "timeline",
        "--samples",
        "500",
        "--inputs",
        '{"starting_max_spend": 600}',
        "--out",
        str(tmp_path),
    )
    assert rc == 0
    assert out.splitlines()[0].startswith(
        "TAI arrival: preset head + starting_max_spend=600; params besiroglu2024"
    )
    assert "seed 0, 500 samples" in out.splitlines()[0]
    plot_rec = json.loads((tmp_path / "arrival_cdf.json").read_text())
    assert plot_rec["overrides"] == {"starting_max_spend": 600}
    assert "starting_max_spend=600" in plot_rec["provenance_line"]
    assert "spec §9" not in out  # the §9 re-computation is for the unmodified preset only


def test_maths_options_on_every_command(capsys):
    base = ["--samples", "2000", "--params", "besiroglu2024", "--json"]
    rc, out, _ = _run(capsys, "requirements", *base, "--k-units", "bits")
    rows = {r["mode"]: r for r in json.loads(out)}
    assert rc == 0 and rows["custom"]["maths"]["k_units"] == "bits"
    # bits + Hoffmann G + closed is the gfix column: identical draws, identical quantiles
    assert rows["custom"]["quantiles_p10_p50_p90"] == rows["gfix"]["quantiles_p10_p50_p90"]
    rc, out, _ = _run(capsys, "compute", "--k", "1e4", "--slowdown", "53.4", "--criterion", "liu", "--json")
    got = {r["mode"]: r["log10_flop"] for r in json.loads(out)["rows"]}
    # Liu's constant ln 10 = 2.303 over Wald's 1.758 lowers log10 C by log10(2.303/1.758)/gamma = 0.764 (Hoffmann)
    assert got["corrected"] - got["custom"] == pytest.approx(0.7636, abs=1e-3)
    rc, out, _ = _run(capsys, "timeline", "--criterion", "liu", "--liu-r", "20", "--samples", "500", "--json")
    assert rc == 0 and json.loads(out)["modes"]["custom"]["maths"]["liu_r"] == 20.0
    rc, out, _ = _run(
        capsys,
        "compare",
        "--g-formula",
        "reference",
        "--inversion",
        "interpolate",
        "--samples",
        "500",
        "--json",
    )
    rec = json.loads(out)
    assert rc == 0 and set(rec["difference_vs_reference"]) == {"corrected", "custom"}


def test_readme_preset_labels_and_readme_deltas(capsys):
    rc, out, _ = _run(capsys, "timeline", "--preset", "readme-2023-08-23", "--samples", "500")
    lines = out.splitlines()
    assert rc == 0 and "dP vs README" in lines[1]
    assert (
        lines[2].startswith("readme-2023 ")
        and lines[3].startswith("corrected ")
        and lines[4].startswith("README")
    )
    rc, out, _ = _run(capsys, "timeline", "--preset", "readme-2023-08-23", "--samples", "500", "--json")
    rec = json.loads(out)
    assert (
        list(rec["modes"]) == ["readme-2023", "corrected"]
        and rec["modes"]["readme-2023"]["mode"] == "readme-2023"
    )
    assert rec["readme"]["probabilities_pct"] == {"2030": 29, "2050": 69, "2100": 79}
    rc, out, _ = _run(capsys, "timeline", "--samples", "500", "--json")
    assert "readme" not in json.loads(out)
    rc, out, _ = _run(capsys, "compare", "--preset", "readme-2023-08-23", "--samples", "500", "--no-timeline")
    assert rc == 0 and "corrected - readme-2023 (OOM)" in out


def test_unknown_preset_is_one_line(capsys):
    rc, out, err = _run(capsys, "timeline", "--preset", "nope")
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("alignlab: error: unknown --preset 'nope'")


def test_no_update_flag_and_input_agree(capsys):
    rc, a, _ = _run(capsys, "timeline", "--samples", "500", "--no-update", "--json")
    rc2, b, _ = _run(
        capsys, "timeline", "--samples", "500", "--inputs", '{"update_on_no_tai": false}', "--json"
    )
    a, b = json.loads(a), json.loads(b)
    assert a["overrides"] == b["overrides"] == {"update_on_no_tai": False}
    assert a["modes"]["corrected"]["requirement_variant"] == "scaled"
    assert a["modes"] == b["modes"]


def test_compare_shows_the_effect_of_overrides(capsys):
    inputs = '{"data_exhausted_year": 2028, "data_quality_fraction": 0.1}'
    rc, out, _ = _run(capsys, "compare", "--samples", "2000", "--inputs", inputs, "--json")
    rec = json.loads(out)
    eff = rec["scenario_effect"]["corrected"]
    assert rc == 0 and eff["median_log10_flop_oom"]["updated_scaled"] == 0.0  # a supply-side input
    assert eff["median_year_fractional"] == pytest.approx(1.5, abs=0.5)
    assert eff["probabilities_pct_points"]["2030"] < -5
    base = rec["preset_inputs"]["modes"]["corrected"]["timeline"]["probabilities_pct_exact"]["2030"]
    assert rec["modes"]["corrected"]["timeline"]["probabilities_pct_exact"]["2030"] - base == pytest.approx(
        eff["probabilities_pct_points"]["2030"]
    )
    rc, out, _ = _run(capsys, "compare", "--samples", "2000", "--inputs", '{"decay_exponent": 1.0}')
    assert rc == 0 and "effect of the overrides" in out
    rc, out, _ = _run(capsys, "compare", "--samples", "2000", "--inputs", '{"decay_exponent": 1.0}', "--json")
    d = json.loads(out)["scenario_effect"]["reference"]["median_log10_flop_oom"]
    assert d["raw"] == 0.0 and d["updated"] == pytest.approx(-0.44, abs=0.12)


def test_compare_update_off_reports_the_paired_requirement(capsys):
    rc, out, _ = _run(capsys, "compare", "--samples", "2000", "--no-update", "--json")
    rec = json.loads(out)
    base = rec["preset_inputs"]["modes"]["corrected"]["median_log10_flop"]
    eff = rec["scenario_effect"]["corrected"]
    assert rc == 0 and rec["modes"]["corrected"]["timeline_requirement"]["variant"] == "scaled"
    assert eff["timeline_requirement_median_oom"] == pytest.approx(base["scaled"] - base["updated_scaled"])
    assert eff["timeline_requirement_median_oom"] < -1.0 and eff["median_year_fractional"] < -1.0


def test_pinned_input_keeps_the_random_stream():
    d = DistributionCI("lognormal", 70, 9.84, 290)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert np.all(PinnedCI(d.kind, d.width, d.lo, d.hi, value=9.84).sample(a, 10) == 9.84)
    d.sample(b, 10)
    assert a.random() == b.random()


def test_sensitivity_command(capsys, tmp_path):
    rc, out, _ = _run(capsys, "sensitivity", "--samples", "1000", "--json", "--out", str(tmp_path))
    rec = json.loads(out)
    assert rc == 0 and [m["mode"] for m in rec["modes"]] == ["reference", "corrected"]
    rows = {r["name"]: r for r in rec["modes"][1]["rows"]}
    assert set(rows) == {
        "slowdown", "k_performance", "invest_growth_rate", "gwp_growth_rate", "max_gwp_pct",
        "transistors_per_core_limit", "process_size_limit", "hardware_specialization",
        "algo_growth_rate", "transfer_multiplier", "algo_limit",
    }  # fmt: skip
    base = rec["modes"][1]["baseline_median_year"]
    k = rows["k_performance"]
    assert k["median_year_low"] < base < k["median_year_high"]  # a longer horizon needs more compute
    s = rows["slowdown"]
    assert s["median_year_high"] < base < s["median_year_low"]
    assert rec["modes"][1]["rows"][0]["name"] in ("k_performance", "slowdown")  # sorted by swing
    assert (tmp_path / "tornado.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "tornado.json").read_text())["modes"][0]["mode"] == "reference"


def test_supply_plots_written_with_bands(capsys, tmp_path):
    rc, _, _ = _run(capsys, "timeline", "--samples", "2000", "--out", str(tmp_path))
    assert rc == 0
    for stem in (
        "spending",
        "flops_per_dollar",
        "algorithmic_progress",
        "physical_compute",
        "effective_compute",
    ):
        assert (tmp_path / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
    spend = json.loads((tmp_path / "spending.json").read_text())
    assert spend["years"][0] == 2023 and spend["seed"] == 0 and spend["samples"] == 2000
    b = spend["band"]
    assert b["p10"][0] < b["p50"][0] < b["p90"][0]
    # spec §9: S(2023) = 8.2492 at the input medians (one year of 196%/yr growth on $60M)
    assert b["p50"][0] == pytest.approx(8.2492, abs=0.01)
    eff = json.loads((tmp_path / "effective_compute.json").read_text())
    assert set(eff["requirements"]) == {"reference", "corrected"}
    assert eff["requirements"]["reference"]["p50"] == pytest.approx(31.8, abs=0.3)
