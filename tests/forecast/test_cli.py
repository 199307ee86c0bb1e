import json

import pytest

from alignlab.cli import main


def _run(capsys, *argv):
    rc = main(["forecast", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_k_command_prints_all_criteria(capsys):
    rc, out, _ = _run(capsys, "k", "--kl", "0.14", "--slowdown", "10", "--json")
    assert rc == 0
    rows = {r["mode"]: r["k_tokens"] for r in json.loads(out)["rows"]}
    assert rows["reference"] == pytest.approx(2.53594 * 10 / 0.14, rel=1e-5)
    assert rows["corrected"] == pytest.approx(1.75778 * 10 / 0.14, rel=1e-5)
    assert rows["liu"] == pytest.approx(164.47, abs=0.01)
    rc, out, _ = _run(capsys, "k", "--kl", "0.14", "--slowdown", "10")
    assert rc == 0 and "reference" in out and "corrected" in out and "liu" in out


def test_compute_command(capsys):
    rc, out, _ = _run(
        capsys, "compute", "--k", "1e4", "--slowdown", "53.4", "--params", "hoffmann2022", "--json"
    )
    assert rc == 0
    rec = json.loads(out)
    got = {r["mode"]: r["log10_flop"] for r in rec["rows"]}
    assert got["reference"] == pytest.approx(33.04, abs=0.01)
    assert got["corrected"] == pytest.approx(32.94, abs=0.01)
    assert rec["difference_oom"]["units_effect"] == pytest.approx(1.04, abs=0.005)


def test_compare_json(capsys):
    rc, out, _ = _run(capsys, "compare", "--json", "--seed", "0")
    assert rc == 0
    rec = json.loads(out)
    ref, cor = rec["modes"]["reference"], rec["modes"]["corrected"]
    assert ref["maths"]["mode"] == "reference" and cor["maths"]["mode"] == "corrected"
    diff = rec["difference_vs_reference"]["corrected"]["median_log10_flop_oom"]
    for v, d in diff.items():
        assert d == pytest.approx(cor["median_log10_flop"][v] - ref["median_log10_flop"][v], abs=1e-12)
    assert ref["median_log10_flop"]["updated_scaled"] == pytest.approx(31.8, abs=0.3)
    assert cor["median_log10_flop"]["updated_scaled"] == pytest.approx(32.0, abs=0.3)
    assert ref["timeline"]["quantile_years"]["p50"] == "2029"
    assert rec["seed"] == 0 and rec["samples"] == 20000 and rec["posterior"] == "quadrature"
    rc2, out2, _ = _run(capsys, "compare", "--json", "--seed", "0")
    assert out2 == out  # reproducible


def test_requirements_and_timeline_tables(capsys, tmp_path):
    rc, out, _ = _run(
        capsys,
        "requirements",
        "--samples",
        "2000",
        "--seed",
        "1",
        "--params",
        "hoffmann2022",
        "--out",
        str(tmp_path / "req"),
    )
    assert rc == 0 and "reference" in out and "corrected" in out and "gfix" in out
    assert (tmp_path / "req" / "requirements_hoffmann2022.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "req" / "requirements.json").read_text())[0]["mode"] == "reference"
    rc, out, _ = _run(
        capsys, "timeline", "--preset", "head", "--samples", "2000", "--out", str(tmp_path / "tl")
    )
    assert rc == 0 and "README" not in out and "spec §9 reference" in out  # README numbers: other preset
    assert (tmp_path / "tl" / "arrival_cdf.png").exists() and (tmp_path / "tl" / "arrival_cdf.json").exists()
    rc, out, _ = _run(capsys, "compute", "--k", "1e3", "--out", str(tmp_path / "c"))
    assert rc == 0 and (tmp_path / "c" / "k_vs_compute.png").exists()
    assert (tmp_path / "c" / "kl_vs_compute.png").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["k", "--kl", "0.1", "--confidence", "1.5"],
        ["k", "--kl", "0.1", "--confidence", "0"],
        ["k", "--compute=-1e24"],
        ["k", "--kl", "0"],
        ["k", "--loss", "2.0", "--params", "besiroglu2024"],
        ["compute", "--k", "-5"],
        ["compute", "--k", "1e4", "--confidence", "1.0"],
        ["requirements", "--samples", "100", "--confidence", "-0.3"],
        ["timeline", "--samples", "100", "--posterior", "nuts"],
    ],
)
def test_bad_input_is_one_line_error(capsys, argv):
    rc, _, err = _run(capsys, *argv)
    assert rc == 2
    assert err.startswith("alignlab: error: ") and err.count("\n") == 1


def test_malformed_files(capsys, tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text("{A: 1")
    rc, _, err = _run(capsys, "compute", "--k", "1e4", "--params", str(bad))
    assert rc == 2 and "not valid JSON" in err and err.count("\n") == 1
    bad.write_text('{"A": 1}')
    rc, _, err = _run(capsys, "requirements", "--samples", "100", "--params", str(bad))
    assert rc == 2 and err.count("\n") == 1
    inputs = tmp_path / "i.json"
    inputs.write_text('{"slowdown": {"kind": "lognormal", "width": 70, "lo": 0, "hi": 9}}')
    rc, _, err = _run(capsys, "timeline", "--samples", "100", "--inputs", str(inputs))
    assert rc == 2 and err.count("\n") == 1


def test_custom_param_file_and_inputs(capsys, tmp_path):
    p = tmp_path / "law.json"
    p.write_text(json.dumps({"A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}))
    rc, out, _ = _run(capsys, "compute", "--k", "1e4", "--slowdown", "53.4", "--params", str(p), "--json")
    assert rc == 0 and json.loads(out)["rows"][2]["log10_flop"] == pytest.approx(32.94, abs=0.01)
    inputs = tmp_path / "i.json"
    inputs.write_text(json.dumps({"starting_max_spend": 600}))  # 10x the 2022 spend
    rc, out, _ = _run(capsys, "timeline", "--samples", "2000", "--inputs", str(inputs), "--json")
    assert rc == 0
    p2030 = json.loads(out)["modes"]["corrected"]["probabilities_pct_exact"]["2030"]
    rc, out, _ = _run(capsys, "timeline", "--samples", "2000", "--json")
    assert p2030 > json.loads(out)["modes"]["corrected"]["probabilities_pct_exact"]["2030"] + 1
    inputs.write_text(json.dumps({"slowdown": 10}))  # a fixed slowdown 0.73 OOM below the prior median
    base = ["requirements", "--samples", "2000", "--params", "hoffmann2022", "--json"]
    rc, out, _ = _run(capsys, *base, "--inputs", str(inputs))
    rec = json.loads(out)[2]
    assert rec["mode"] == "corrected" and rec["spec_table_p10_p50_p90"] is None
    rc, out, _ = _run(capsys, *base)
    default = json.loads(out)[2]["quantiles_p10_p50_p90"]["raw"][1]
    # a slower-updating judge needs less KL: a smaller s raises the requirement by ~log10(53.42/10)/gamma = 4.7 OOM
    assert 3.5 < rec["quantiles_p10_p50_p90"]["raw"][1] - default < 5.5
