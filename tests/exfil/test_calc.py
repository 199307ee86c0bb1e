"""Calculator: golden scenarios (spec §5), modes, units, validation, tables, plots, CLI."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from alignlab.cli import main
from alignlab.errors import AlignlabError
from alignlab.exfil.calc import NO_HEADROOM, CalcConfig, time_to_exfiltrate
from alignlab.exfil.scenarios import SCENARIOS, render_csv, render_text, scenario_rows
from alignlab.exfil.units import parse_rate, parse_size


def sig4(x: float) -> str:
    return f"{x:.4g}"


@pytest.mark.parametrize(
    "name,unit,expected",
    [
        ("karvonen", "days", 2000),
        ("karvonen-c16", "days", 125),
        ("karvonen-c100", "days", 20),
        ("haiku-opus-raw", "days", 1),
        ("verified-stego", "days", 200),
        ("comment-10M", "months", 549.8),
        ("comment-1B", "months", 5.498),
        ("comment-10M-si", "months", 500.0),
        ("comment-1B-si", "months", 5.0),
    ],
)
def test_golden_scenarios_4_significant_figures(name, unit, expected):
    res = time_to_exfiltrate(SCENARIOS[name].config)
    value = res.days if unit == "days" else res.months
    assert sig4(value) == sig4(expected)


def test_headroom_mode_default_and_no_headroom():
    # h·L_legit channel: 1e9 tokens/day × 4 B × 0.1 = 4e8 B/day; 1 TB / 4e8 = 2500 days
    res = time_to_exfiltrate(CalcConfig(weights="1TB", tokens_per_day=1e9, bytes_per_token=4, headroom=0.1))
    assert res.channel_bytes_per_day == pytest.approx(4e8)
    assert res.upload_bytes_per_day == pytest.approx(4.4e9)
    assert res.days == pytest.approx(2500)
    # ρ_d shrinks legitimate traffic and so the channel: T grows by 1/ρ_d
    res2 = time_to_exfiltrate(CalcConfig(weights="1TB", tokens_per_day=1e9, defender_compression=0.03))
    assert res2.days == pytest.approx(2500 / 0.03)
    # explicit U ≤ L_legit: no headroom, not an error
    for upload in ("4GB/day", "3GB/day"):
        res3 = time_to_exfiltrate(CalcConfig(weights="1TB", tokens_per_day=1e9, upload=upload))
        assert math.isinf(res3.days) and res3.no_headroom and res3.text() == NO_HEADROOM
    res4 = time_to_exfiltrate(CalcConfig(weights="1TB", tokens_per_day=1e9, upload="5GB/day"))
    assert res4.days == pytest.approx(1000)


def test_params_and_accounts_mode():
    # 1e12 params bf16 = 2 TB; r_w 1/16; 1000 accounts × 1 MB/day = 1 GB/day -> 125 days
    cfg = CalcConfig(mode="accounts", params=1e12, weight_compression=1 / 16, accounts=1000, per_account="1MB/day")
    assert time_to_exfiltrate(cfg).days == pytest.approx(125)
    cfg2 = CalcConfig(mode="accounts", params=1e12, accounts=1000, per_account="1MB/day", stego_fraction=0.5)
    assert time_to_exfiltrate(cfg2).days == pytest.approx(4000)


def test_si_and_iec_units():
    assert parse_size("1GB") == 1e9
    assert parse_size("1 kB") == 1e3
    assert parse_size("2TB") == 2e12
    assert parse_size("1GiB") == 2**30
    assert parse_size("0.64TiB") == pytest.approx(0.64 * 2**40)
    assert parse_size("1e9") == 1e9
    assert parse_size("128 B") == 128
    assert parse_rate("1GB/day") == 1e9
    assert parse_rate("1MB/s") == pytest.approx(86400e6)
    assert parse_rate("1GiB/h") == pytest.approx(24 * 2**30)
    assert parse_rate("128B/month") == pytest.approx(128 / 30.44)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(weights="-2TB", mode="channel", upload="1GB/day"), "weights"),
        (dict(weights="0TB", mode="channel", upload="1GB/day"), "weights"),
        (dict(weights="2XB", mode="channel", upload="1GB/day"), "weights"),
        (dict(params=0.0, mode="channel", upload="1GB/day"), "params"),
        (dict(params=float("nan"), mode="channel", upload="1GB/day"), "params"),
        (dict(weights="2TB", mode="channel", upload="0GB/day"), "upload"),
        (dict(weights="2TB", mode="channel", upload="inf"), "upload"),
        (dict(weights="2TB", mode="channel"), "upload"),
        (dict(weights="2TB", mode="channel", upload="1GB", weight_compression=1.5), "weight_compression"),
        (dict(weights="2TB", mode="channel", upload="1GB", weight_compression=0.0), "weight_compression"),
        (dict(weights="2TB", mode="channel", upload="1GB", stego_fraction=2.0), "stego_fraction"),
        (dict(weights="2TB", tokens_per_day=1e9, defender_compression=-0.1), "defender_compression"),
        (dict(weights="2TB", tokens_per_day=-5.0), "tokens_per_day"),
        (dict(weights="2TB", tokens_per_day=1e9, bytes_per_token=0.0), "bytes_per_token"),
        (dict(weights="2TB", tokens_per_day=1e9, headroom=float("inf")), "headroom"),
        (dict(weights="2TB"), "tokens_per_day"),
        (dict(weights="2TB", mode="accounts", per_account="1kB/day", accounts=-1.0), "accounts"),
        (dict(weights="2TB", mode="accounts"), "per_account"),
        (dict(mode="channel", upload="1GB/day"), "weights"),
    ],
)
def test_invalid_inputs_name_their_field(kwargs, field):
    with pytest.raises(AlignlabError) as exc:
        CalcConfig(**kwargs)
    assert str(exc.value).startswith(field + ":")
    assert "\n" not in str(exc.value)


def test_tables_echo_inputs_and_source():
    rows = scenario_rows(list(SCENARIOS))
    text = render_text(rows)
    assert "karvonen" in text and "2000 days" in text and "549.8 months" in text
    parsed = list(csv.DictReader(io.StringIO(render_csv(rows))))
    assert len(parsed) == len(SCENARIOS)
    k = next(r for r in parsed if r["scenario"] == "verified-stego")
    assert float(k["stego_fraction"]) == 0.005 and float(k["days"]) == pytest.approx(200)
    assert k["weights"] == "1TB" and "2511.02620" in k["source"]


def test_cli_scenario_json(capsys):
    assert main(["exfil", "calc", "--scenario", "karvonen", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scenario"] == "karvonen" and out["days"] == pytest.approx(2000)
    assert out["inputs"]["weights"] == "2TB" and out["inputs"]["upload"] == "1GB/day"
    assert out["channel_bytes_per_day"] == 1e9 and out["weights_bytes"] == 2e12


def test_cli_custom_no_headroom_json_and_error(capsys):
    argv = ["exfil", "calc", "--weights", "1TB", "--tokens-per-day", "1e9", "--upload", "1GB/day", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["days"] is None and out["no_headroom"] is True and out["result"] == NO_HEADROOM
    assert main(["exfil", "calc", "--weights=-1TB", "--mode", "channel", "--upload", "1GB/day"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignlab: error: weights:")
    assert main(["exfil", "calc", "--scenario", "nope"]) == 2
    assert "scenario" in capsys.readouterr().err


def test_cli_plots_and_out(tmp_path, capsys):
    out = tmp_path / "table.csv"
    assert main(["exfil", "calc", "--scenario", "all", "--out", str(out), "--plot-dir", str(tmp_path)]) == 0
    assert out.read_text().startswith("scenario,")
    for name in ("calc_headroom.png", "calc_heatmap.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert json.loads((tmp_path / "calc_plots.json").read_text())["calc_heatmap.png"]["headroom"] == 0.1


def test_cli_registration_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, argparse; from alignlab.exfil.cli import register; "
            "register(argparse.ArgumentParser().add_subparsers()); "
            "print(sorted(m for m in ('torch', 'numpy', 'aiohttp', 'zstandard', 'openai', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
