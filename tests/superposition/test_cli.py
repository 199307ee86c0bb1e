import json

import pytest

from alignlab.cli import main

TINY = ["--steps", "60", "--batch", "64"]


def test_intro_json_prints_levels_and_writes_artifacts(tmp_path, capsys):
    out = tmp_path / "intro"
    assert main(["superposition", "intro", *TINY, "--restarts", "1", "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["experiment"] == "intro" and data["provenance"]["preset"] == "tms-notebook"
    assert data["provenance"]["backend"] == "torch" and data["provenance"]["version"]
    levels = data["levels"]
    assert len(levels) == 10 and levels[0]["feature_prob"] == 1.0
    for lv in levels:
        assert isinstance(lv["n_represented"], int) and 0 <= lv["n_represented"] <= 5
        assert lv["arrangement"] in {"none", "single", "orthogonal", "antipodal", "triangle", "pentagon", "other"}
    for name in ("metrics.json", "geometry_2d.png", "norms_interference.png", "levels.csv", "geometry_2d.csv"):
        assert (out / name).stat().st_size > 0
    assert (out / "geometry_2d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "arrangement" in page  # plots + summary table
    assert not (tmp_path / "report.html").exists()  # an explicit --out keeps everything inside it


def test_rerun_reproduces_metrics_byte_for_byte(tmp_path, capsys):
    for name in ("a", "b"):
        assert main(["superposition", "intro", *TINY, "--restarts", "2", "--seed", "3",
                     "--out", str(tmp_path / name)]) == 0
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    assert (tmp_path / "a" / "geometry_2d.png").read_bytes() == (tmp_path / "b" / "geometry_2d.png").read_bytes()
    assert "arrangement" in capsys.readouterr().out  # the text table


def test_numpy_backend_runs(tmp_path, capsys):
    assert main(["superposition", "intro", "--steps", "20", "--batch", "32", "--restarts", "1", "--backend",
                 "numpy", "--out", str(tmp_path / "np"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"]["backend"] == "numpy"


@pytest.mark.parametrize("cmd,png", [("dims", "dimensionality.png"), ("features", "norms_interference.png"),
                                     ("phase", "phase_diagram.png")])
def test_grid_commands(tmp_path, capsys, cmd, png):
    out = tmp_path / cmd
    args = ["superposition", cmd, "--steps", "5", "--batch", "16", "--restarts", "1", "--out", str(out), "--json"]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["experiment"] == cmd and (out / png).exists() and (out / "metrics.json").exists()
    if cmd == "phase":
        assert len(data["cells"]) == 121 and sum(data["counts"].values()) == 121
    else:
        assert len(data["levels"]) == 20 and "lines" in data["levels"][0]


def test_polysemantic_all(tmp_path, capsys):
    out = tmp_path / "poly"
    assert main(["superposition", "polysemantic", "all", "--xor", "--companion-steps", "20", "--out", str(out),
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_name = {c["name"]: c for c in data["cases"]}
    assert by_name["c1"]["concepts_per_neuron"] == [4, 2, 2, 2] and by_name["c1"]["guard"]["holds"]
    assert by_name["c2"]["poly_frac"] == 0.5 and by_name["c3"]["poly_frac"] == 1.0
    assert not by_name["superposition"]["guard"]["holds"]
    assert len(data["c1_trained_companion"]["replicates"]) == 5
    for name in ("c1", "c2", "c3"):
        assert (out / f"poly_{name}.png").exists()


def test_linear_flag_is_recorded(tmp_path, capsys):
    assert main(["superposition", "intro", "--steps", "5", "--batch", "8", "--restarts", "1", "--linear",
                 "--out", str(tmp_path / "lin"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"]["config"]["linear"] is True


def test_polysemantic_rerun_is_byte_identical(tmp_path):
    for name in ("a", "b"):
        assert main(["superposition", "polysemantic", "c3", "--xor", "--out", str(tmp_path / name)]) == 0
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()


def test_polysemantic_table(tmp_path, capsys):
    assert main(["superposition", "polysemantic", "c2", "--out", str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    assert "c2" in text and "(1, 1, 3, 3)" in text


@pytest.mark.parametrize("args,msg", [
    (["intro", "--steps", "0"], "--steps must be >= 1"),
    (["intro", "--lr", "-1"], "--lr must be"),
    (["polysemantic", "c1", "--companion-steps", "-1"], "--companion-steps"),
])
def test_bad_input_is_one_line_error(tmp_path, capsys, args, msg):
    assert main(["superposition", *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignlab: error:") and msg in err and len(err.strip().splitlines()) == 1


def test_default_layout_gathers_one_page(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["superposition", "polysemantic", "c1", "--companion-steps", "0"]) == 0
    assert main(["superposition", "polysemantic", "c2", "--out", "runs/superposition/poly2"]) == 0
    assert main(["superposition", "polysemantic", "c3"]) == 0  # default layout: rebuilds the shared page
    page = (tmp_path / "runs" / "superposition" / "report.html").read_text()
    for name in ("poly_c1.png", "poly_c2.png", "poly_c3.png"):
        assert name in page  # one page, every command's plots
    assert page.count("data:image/png;base64,") == 4  # c1, c3, c3-attributes (polysemantic/) + c2 (poly2/)


def test_group_without_command_prints_help(capsys):
    assert main(["superposition"]) == 2
    assert "polysemantic" in capsys.readouterr().out
