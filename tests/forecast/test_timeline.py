import math

import numpy as np
import pytest

from alignlab.errors import AlignlabError
from alignlab.forecast import hardware as hw
from alignlab.forecast.modes import CORRECTED
from alignlab.forecast.pipeline import get_preset, run_timeline
from alignlab.forecast.requirements import RequirementsConfig
from alignlab.forecast.timeline import (
    algorithmic_path,
    arrival,
    constrain,
    flops_per_dollar_path,
    inputs_from_dict,
    resample_positive,
    spending_path,
)


def test_constrain_limits():
    assert float(constrain(3.0, 20.0)) == pytest.approx(1e3, rel=1e-12)  # v << l -> 10^v (exp rounds to 1)
    assert float(constrain(40.0, 12.0)) == pytest.approx(1e12, rel=1e-12)  # v >> l -> 10^l
    assert float(constrain(7.0, 7.0)) == pytest.approx(1e7 * (1 - math.exp(-1)), rel=1e-12)
    assert float(constrain(5.0, 0.0)) == 0.0
    assert np.isfinite(constrain(400.0, 500.0))  # clamped at 300


def test_grid_and_coefficients_digit_for_digit():
    assert hw.GRID[0] == 1_032_617_600 and hw.GRID[-1] == 1_032_617_600 + 1_585_568 * 1000
    assert [hw.year_index(y) for y in range(2023, 2053)] == list(hw.YEAR_INDICES)
    assert hw.YEAR_INDICES[0] == 404 and hw.YEAR_INDICES[-1] == 981
    assert hw.PROCESS_SIZE == (4.359329479566028, -2.1908149342524868e-9)
    assert hw.TRANSISTORS == (-1.7054015150778039, 3.5620835889231534e-9)
    assert hw.CORES[0.95] == (-0.1670172016403657, 2.5532050646632783e-9)
    assert hw.FLOPS_FIT == (10.084356977902107, -0.4117506135075512, 0.9198718705452034)


# spec §9 deterministic rollout at the input medians (q = 0.80): year -> S, F, A, E
ROLLOUT = {
    2023: (8.2492, 17.6756, 0.3380, 26.2628),
    2024: (8.7201, 17.7853, 0.6759, 27.1813),
    2030: (11.2235, 19.1843, 2.7030, 33.1109),
    2040: (11.4174, 20.5301, 5.2175, 37.1650),
    2050: (11.5279, 21.6831, 5.2178, 38.4287),
    2100: (12.0799, 21.6831, 5.2178, 38.9808),
}


def _baseline(q_index: int) -> np.ndarray:
    return hw.baseline_flops_per_second(np.array([1.86333]), np.array([1.33195]), np.array([q_index]), 78)


def test_deterministic_rollout():
    s = spending_path([196.0], [2.575], [0.141421], [60.0])
    f = flops_per_dollar_path(_baseline(0), [0.1])
    a = algorithmic_path([0.337964], [5.21776])
    e = s + f + a
    for year, expected in ROLLOUT.items():
        n = year - 2023
        got = [float(x[0, n]) for x in (s, f, a, e)]
        assert np.allclose(got, expected, atol=1e-3), year
    assert float(f[0, 0] - (_baseline(0)[0, 0] + 0.1)) == pytest.approx(4.10087, abs=1e-5)  # a_0 = 2 years


def test_baseline_values():
    b = np.array([_baseline(q)[0] for q in range(4)])  # [4, 78]
    assert np.allclose(b[:, 0], [13.4747, 13.4912, 13.5522, 13.5748], atol=1e-3)
    assert np.allclose(b[:, 7], [14.3315, 14.2788, 14.3093, 14.2667], atol=1e-3)
    assert np.allclose(b[:, 17:], 14.4061, atol=1e-3)
    assert np.all(np.diff(b, axis=1) >= -1e-12)  # B never decreases


def test_begin_at_initial_spending_shifts_by_one_year():
    a = spending_path([196.0], [2.575], [0.141421], [60.0])
    b = spending_path([196.0], [2.575], [0.141421], [60.0], begin_at_initial_spending=True)
    assert float(b[0, 0]) == pytest.approx(math.log10(60e6))
    assert np.allclose(b[0, 1:], a[0, :-1])


def test_resample_positive_keeps_order_and_appends():
    x = np.array([1.0, -1.0, 2.0, 0.0, 3.0])
    y = resample_positive(x, np.random.default_rng(0))
    assert list(y[:3]) == [1.0, 2.0, 3.0] and set(y[3:]) <= {1.0, 2.0, 3.0} and y.size == 5


def test_arrival_curves():
    eff = np.array([[1.0, 3.0, 1.0], [0.0, 0.0, 5.0]])  # [2 rollouts, 3 years]
    arr = arrival(eff, np.array([2.0, 4.0]))
    assert np.allclose(arr.p_exceed, [0.0, 0.5, 0.5])
    assert np.allclose(arr.p_first, [0.0, 0.5, 1.0])
    with pytest.raises(AlignlabError):
        arrival(eff, np.array([1.0]))


def _check_head(run, target):
    s = run.summary()
    p = s["probabilities_pct_exact"]
    for year, ref in target.items():
        assert p[year] == pytest.approx(ref, abs=1.5), year
    assert s["quantile_years"]["p50"] == "2029"
    assert s["quantile_years"]["p10"] in ("2024", "2025")
    assert np.all(np.diff(run.arrival.p_first) >= 0)
    assert np.all(run.arrival.p_first >= run.arrival.p_exceed - 1e-15)
    assert s["max_gap_pct"] <= 0.5


def test_head_defaults_both_modes():
    preset = get_preset("head")
    cfg = RequirementsConfig(seed=5, params="besiroglu2024")
    _check_head(run_timeline(preset, preset.reference_maths, cfg), {"2030": 58.7, "2050": 86.0, "2100": 91.2})
    _check_head(run_timeline(preset, CORRECTED, cfg), {"2030": 58.0, "2050": 85.8, "2100": 91.1})


def test_readme_preset_over_seeds_0_to_9():
    preset = get_preset("readme-2023-08-23")
    probs, p50, p10, p90 = [], [], [], []
    for seed in range(10):
        s = run_timeline(
            preset, preset.reference_maths, RequirementsConfig(seed=seed, params="hoffmann2022")
        ).summary()
        probs.append([s["probabilities_pct_exact"][y] for y in ("2030", "2050", "2100")])
        p10.append(int(s["quantile_years"]["p10"]))
        p50.append(int(s["quantile_years"]["p50"]))
        p90.append(s["quantile_years"]["p90"])
    assert np.allclose(np.median(probs, axis=0), [29, 69, 79], atol=2.0)
    assert abs(np.median(p50) - 2036) <= 1 and abs(np.median(p10) - 2026) <= 1
    assert sorted(set(p90)) == [">2100"]


def test_same_seed_same_timeline():
    preset = get_preset("head")
    cfg = RequirementsConfig(seed=1, samples=2000)
    a = run_timeline(preset, CORRECTED, cfg).arrival
    b = run_timeline(preset, CORRECTED, cfg).arrival
    assert np.array_equal(a.p_exceed, b.p_exceed)


def test_inputs_from_dict_validation():
    t = inputs_from_dict(
        {"starting_max_spend": 100, "algo_limit": {"kind": "lognormal", "width": 80, "lo": 2, "hi": 10}}
    )
    assert t.starting_max_spend.median() == 100 and t.algo_limit.hi == 10
    for bad in ({"nope": 1}, {"starting_gwp": "big"}, {"begin_at_initial_spending": 1}, [1]):
        with pytest.raises(AlignlabError):
            inputs_from_dict(bad)
