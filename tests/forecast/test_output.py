"""--out errors, file modes, and the dropped-draw warning (issue 12, forecast items; issue 18 item 7)."""

import json
import os
import stat

import pytest

from alignlab.cli import main

COMMANDS = [
    ["compute", "--k", "1e4"],
    ["requirements", "--samples", "100", "--params", "hoffmann2022"],
    ["timeline", "--samples", "100"],
    ["compare", "--samples", "100"],
    ["sensitivity", "--samples", "100"],
]


def _run(capsys, *argv):
    rc = main(["forecast", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("argv", COMMANDS)
def test_out_is_an_existing_file(capsys, tmp_path, argv):
    f = tmp_path / "taken"
    f.write_text("x")
    rc, out, err = _run(capsys, *argv, "--out", str(f))
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"alignlab: error: --out {f} is an existing file")
    rc, _, err = _run(capsys, *argv, "--out", str(f / "sub"))  # a directory under a file
    assert rc == 2 and err.count("\n") == 1 and "cannot be written" in err


@pytest.mark.parametrize("argv", COMMANDS[:3])
def test_out_not_writable(capsys, tmp_path, monkeypatch, argv):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("alignlab.forecast.output.tempfile.TemporaryFile", refuse)
    rc, out, err = _run(capsys, *argv, "--out", str(tmp_path / "ro"))
    assert (
        rc == 2
        and out == ""
        and err
        == (
            f"alignlab: error: --out {tmp_path / 'ro'} cannot be written (Permission denied); pass a writable directory\n"
        )
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_out_read_only_directory(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    rc, _, err = _run(capsys, "timeline", "--samples", "100", "--out", str(ro))
    assert rc == 2 and err.count("\n") == 1 and "cannot be written" in err


def test_files_follow_the_umask(capsys, tmp_path):
    old = os.umask(0o022)
    try:
        rc, _, _ = _run(capsys, "compute", "--k", "1e4", "--out", str(tmp_path / "a"))
        os.umask(0o077)
        rc2, _, _ = _run(capsys, "compute", "--k", "1e4", "--out", str(tmp_path / "b"))
    finally:
        os.umask(old)
    assert rc == rc2 == 0
    for name in ("compute.json", "k_vs_compute.png", "k_vs_compute.json"):
        assert stat.S_IMODE((tmp_path / "a" / name).stat().st_mode) == 0o644
        assert stat.S_IMODE((tmp_path / "b" / name).stat().st_mode) == 0o600
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no probe or temp left


def test_large_sd_alpha_warns_with_the_count(capsys, tmp_path):
    law = tmp_path / "wide.json"
    law.write_text(json.dumps({"A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658, "sd_alpha": 0.5}))
    rc, out, err = _run(capsys, "timeline", "--params", str(law), "--samples", "2000", "--json")
    assert rc == 0
    rec = json.loads(out)
    dropped = rec["modes"]["corrected"]["non_finite_requirement_draws"]
    assert dropped == 451  # seed 0: alpha < 0 in 22.6% of draws (P(N(0.3478, 0.5) < 0) = 24%)
    lines = err.splitlines()
    assert len(lines) == 2 and all(
        line.startswith("alignlab: warning: 451 of 2000 requirement draws") for line in lines
    )
    assert "(22.6%)" in lines[0] and "mode reference" in lines[0] and "mode corrected" in lines[1]
    assert len(rec["warnings"]) == 2 and rec["warnings"][1] == lines[1].removeprefix("alignlab: warning: ")
    rc, out, err = _run(capsys, "requirements", "--params", str(law), "--samples", "2000", "--json")
    recs = json.loads(out)
    assert rc == 0 and all(r["non_finite"] == 451 and len(r["warnings"]) == 1 for r in recs)
    assert err.count("alignlab: warning: 451 of 2000") == 3
    rc, out, err = _run(
        capsys, "compare", "--params", str(law), "--samples", "2000", "--no-timeline", "--json"
    )
    assert rc == 0 and len(json.loads(out)["warnings"]) == 2 and err.count("warning") == 2
    rc, out, err = _run(capsys, "timeline", "--samples", "2000", "--json")
    assert err == "" and json.loads(out)["warnings"] == []


def test_requirements_refuses_timeline_inputs(capsys):
    rc, _, err = _run(capsys, "requirements", "--samples", "100", "--inputs", '{"starting_max_spend": 600}')
    assert rc == 2 and err.count("\n") == 1 and "starting_max_spend only affect" in err


def test_growth_below_minus_100_refused_on_the_cli(capsys):
    bad = '{"invest_growth_rate": {"kind": "normal", "width": 80, "lo": -150, "hi": -120}}'
    rc, out, err = _run(capsys, "timeline", "--samples", "100", "--inputs", bad)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "invest_growth_rate" in err and "-100" in err
    rc, _, err = _run(capsys, "timeline", "--samples", "100", "--inputs", '{"starting_max_spend": -60}')
    assert rc == 2 and "starting_max_spend" in err and "growth" not in err
