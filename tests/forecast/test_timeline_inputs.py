"""Timeline inputs: the reference app's validators, the data-quality scenario, the per-year curve."""

import math
from dataclasses import replace

import numpy as np
import pytest

from alignlab.errors import AlignlabError
from alignlab.forecast.modes import CORRECTED
from alignlab.forecast.pipeline import get_preset, run_timeline
from alignlab.forecast.requirements import RequirementsConfig
from alignlab.forecast.scaling import HOFFMANN2022, kl_at_compute
from alignlab.forecast.timeline import YEARS, Arrival, TimelineInputs, inputs_from_dict, sample_rollouts


@pytest.mark.parametrize(
    "obj, name",
    [
        (
            {"invest_growth_rate": {"kind": "normal", "width": 80, "lo": -150, "hi": -120}},
            "invest_growth_rate",
        ),
        ({"invest_growth_rate": {"kind": "normal", "width": 80, "lo": -100, "hi": 50}}, "invest_growth_rate"),
        ({"gwp_growth_rate": -100}, "gwp_growth_rate"),
        ({"starting_max_spend": -60}, "starting_max_spend"),
        ({"starting_max_spend": 0}, "starting_max_spend"),
        ({"transfer_multiplier": 0}, "transfer_multiplier"),
        ({"algo_limit": {"kind": "normal", "width": 80, "lo": -1, "hi": 5}}, "algo_limit"),
        ({"max_gwp_pct": {"kind": "normal", "width": 80, "lo": -1, "hi": 5}}, "max_gwp_pct"),
    ],
)
def test_reference_validators_name_the_input(obj, name):
    with pytest.raises(AlignlabError) as exc:
        inputs_from_dict(obj)
    msg = str(exc.value)
    assert msg.startswith(f"timeline input {name}:") and "\n" not in msg
    if name == "starting_max_spend":
        assert "growth" not in msg  # it used to be reported as a growth-rate problem


def test_validators_accept_the_edges_the_reference_accepts():
    inputs_from_dict({"invest_growth_rate": {"kind": "normal", "width": 80, "lo": -99, "hi": 50}})
    inputs_from_dict({"algo_limit": {"kind": "normal", "width": 80, "lo": 0, "hi": 5}})


def test_data_quality_inputs_validated():
    for bad in (
        {"data_quality_fraction": 0},
        {"data_quality_fraction": 1.5},
        {"data_exhausted_year": "soon"},
    ):
        with pytest.raises(AlignlabError):
            inputs_from_dict(bad)
    assert inputs_from_dict({"data_exhausted_year": None}).data_exhausted_year is None


def test_data_multiplier_is_a_compute_multiplier():
    """B/(f D)^beta with the allocation re-fitted equals full-quality data at f C (hoffmann and coded G)."""
    f = 0.1
    cheap = replace(HOFFMANN2022, B=HOFFMANN2022.B * f**-HOFFMANN2022.beta)
    c = np.array([1e20, 1e25, 1e32])
    for g in ("hoffmann", "reference"):
        np.testing.assert_allclose(
            kl_at_compute(c, cheap, g), kl_at_compute(f * c, HOFFMANN2022, g), rtol=1e-12
        )


def test_data_quality_offset_and_effect():
    on = TimelineInputs(data_exhausted_year=2030, data_quality_fraction=0.1)
    off = on.data_quality_offset()
    assert off.shape == (78,) and off[YEARS < 2030].max() == 0.0 and np.all(off[YEARS >= 2030] == -1.0)
    assert np.all(TimelineInputs(data_quality_fraction=0.1).data_quality_offset() == 0.0)  # no year: off
    a = sample_rollouts(TimelineInputs(), np.random.default_rng(5), 200)
    b = sample_rollouts(on, np.random.default_rng(5), 200)
    np.testing.assert_array_equal(b.spending, a.spending)  # deterministic: the random stream is unchanged
    np.testing.assert_allclose(b.effective - a.effective, np.broadcast_to(off, a.effective.shape))


def test_data_quality_delays_arrival():
    preset, cfg = get_preset("head"), RequirementsConfig(samples=4000, seed=0)
    base = run_timeline(preset, CORRECTED, cfg).arrival
    late = run_timeline(
        preset, CORRECTED, cfg, inputs=TimelineInputs(data_exhausted_year=2028, data_quality_fraction=0.1)
    ).arrival
    np.testing.assert_array_equal(late.p_exceed[:5], base.p_exceed[:5])  # 2023-2027 untouched
    assert late.prob(2030) < base.prob(2030) - 0.05
    assert late.fractional_year() - base.fractional_year() == pytest.approx(1.5, abs=0.4)


def test_arrival_curve_and_fractional_year():
    arr = Arrival(years=np.array([2023, 2024, 2025]), p_exceed=np.array([0.2, 0.4, 0.8]), p_first=np.zeros(3))
    assert arr.fractional_year(0.5) == pytest.approx(2024.25)
    assert arr.fractional_year(0.1) == 2023.0 and arr.fractional_year(0.9) is None
    curve = arr.curve()
    assert curve["years"] == [2023, 2024, 2025] and curve["p_exceed_pct"] == pytest.approx([20, 40, 80])
    assert math.isclose(curve["first_passage_pct"][0], 0.0)
