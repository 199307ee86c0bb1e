import json

import pytest

from alignlab.errors import AlignlabError
from alignlab.forecast.scaling import (
    BESIROGLU2024,
    HOFFMANN2022,
    g_constant,
    kl_at_compute,
    load_scaling_law,
    optimal_n_d,
    power_law,
)


def _g(law, formula):
    return g_constant(law.A, law.B, law.alpha, law.beta, formula)


def test_g_values():
    assert _g(HOFFMANN2022, "hoffmann") == pytest.approx(1.34471, rel=1e-5)
    assert _g(HOFFMANN2022, "reference") == pytest.approx(0.065577, rel=1e-5)
    assert _g(BESIROGLU2024, "hoffmann") == pytest.approx(0.119630, rel=1e-5)
    assert _g(BESIROGLU2024, "reference") == pytest.approx(0.015314, rel=1e-4)
    law = HOFFMANN2022
    assert _g(law, "no-exponent") == pytest.approx(law.alpha * law.A / (law.beta * law.B), rel=1e-15)
    with pytest.raises(AlignlabError):
        _g(law, "bogus")


def test_closed_form_power_law():
    pl = power_law(HOFFMANN2022)
    assert pl.gamma == pytest.approx(0.15355, abs=1e-5)
    assert pytest.approx(1071.4, abs=0.5) == pl.P
    assert float(kl_at_compute(2e25, HOFFMANN2022)) == pytest.approx(0.1396, abs=5e-4)
    assert pl.P * 2e25**-pl.gamma == pytest.approx(float(kl_at_compute(2e25, HOFFMANN2022)), rel=1e-12)
    pb = power_law(BESIROGLU2024)
    assert pb.gamma == pytest.approx(0.17829, abs=1e-5)
    assert pytest.approx(2708.5, abs=0.5) == pb.P
    assert float(kl_at_compute(2e25, BESIROGLU2024)) == pytest.approx(0.0835, abs=5e-4)


def test_allocation_at_gpt4_scale():
    law = HOFFMANN2022
    N, D = optimal_n_d(2e25, law.A, law.B, law.alpha, law.beta)
    assert pytest.approx(2e25, rel=1e-12) == 6 * N * D
    assert pytest.approx(1.6e11, rel=0.05) == N
    assert pytest.approx(2.1e13, rel=0.05) == D


def test_liu_100x_compute_gives_2_03x_survival():
    ratio = float(kl_at_compute(1e25, HOFFMANN2022) / kl_at_compute(1e27, HOFFMANN2022))
    assert ratio == pytest.approx(2.03, abs=0.01)


def test_param_file_roundtrip(tmp_path):
    p = tmp_path / "mine.json"
    p.write_text(json.dumps({"A": 400, "B": 400, "alpha": 0.3, "beta": 0.3, "sd_A": 0}))
    law = load_scaling_law(str(p))
    assert law.name == "mine" and law.sd_A == 0 and law.E is None


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        '{"A": 1, "B": 2}',
        '{"A": 1, "B": 2, "alpha": 0.3, "beta": 0.3, "gamma": 1}',
        '{"A": -1, "B": 2, "alpha": 0.3, "beta": 0.3}',
        '{"A": "x", "B": 2, "alpha": 0.3, "beta": 0.3}',
    ],
)
def test_malformed_param_file(tmp_path, text):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(AlignlabError) as exc:
        load_scaling_law(str(p))
    assert "\n" not in str(exc.value)
