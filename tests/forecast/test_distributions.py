import math

import numpy as np
import pytest

from alignlab.errors import AlignlabError
from alignlab.forecast.distributions import DistributionCI, norm_cdf, norm_ppf, z_for_width
from alignlab.forecast.requirements import RequirementInputs
from alignlab.forecast.timeline import README_2023_INPUTS, TimelineInputs


def test_z_values():
    assert z_for_width(70) == pytest.approx(1.0364, abs=1e-4)
    assert z_for_width(80) == pytest.approx(1.2816, abs=1e-4)
    assert z_for_width(95) == pytest.approx(1.9600, abs=1e-4)


@pytest.mark.parametrize("p", [1e-10, 0.001, 0.02, 0.3, 0.5, 0.8, 0.99, 1 - 1e-9])
def test_norm_ppf_inverts_cdf(p):
    assert norm_cdf(norm_ppf(p)) == pytest.approx(p, rel=1e-12)


def test_prior_medians():
    inputs = RequirementInputs()
    assert inputs.slowdown.median() == pytest.approx(53.42, rel=1e-3)
    assert inputs.k_performance.median() == pytest.approx(21058, rel=1e-3)


def test_timeline_input_parameters_match_spec():
    t = TimelineInputs()
    assert t.invest_growth_rate.mu() == pytest.approx(196)
    assert t.invest_growth_rate.sigma() == pytest.approx(39.0152, abs=1e-4)
    assert t.gwp_growth_rate.sigma() == pytest.approx(1.69716, abs=1e-5)
    assert t.max_gwp_pct.median() == pytest.approx(0.141421, abs=1e-6)
    assert t.max_gwp_pct.sigma() == pytest.approx(1.81914, abs=1e-5)
    assert t.transistors_per_core_limit.median() == pytest.approx(1.33195, abs=1e-5)
    assert t.transistors_per_core_limit.sigma() == pytest.approx(0.382519, abs=1e-6)
    assert t.process_size_limit.sigma() == pytest.approx(0.275843, abs=1e-6)
    assert t.hardware_specialization.sigma() == pytest.approx(0.714985, abs=1e-6)
    assert t.algo_growth_rate.sigma() == pytest.approx(0.207171, abs=1e-6)
    assert t.transfer_multiplier.median() == pytest.approx(0.663325, abs=1e-6)
    assert t.algo_limit.median() == pytest.approx(5.21776, abs=1e-5)
    assert t.algo_limit.sigma() == pytest.approx(0.656343, abs=1e-6)
    assert README_2023_INPUTS.invest_growth_rate.sigma() == pytest.approx(22.3728, abs=1e-4)
    assert README_2023_INPUTS.algo_growth_rate.sigma() == pytest.approx(0.171667, abs=1e-6)


def test_change_width_keeps_mu_sigma():
    for d in (DistributionCI("normal", 90, 25.9, 99.5), DistributionCI("lognormal", 70, 9.84, 290)):
        w = d.change_width()
        assert w.width == 80
        assert w.mu() == pytest.approx(d.mu(), rel=1e-12)
        assert w.sigma() == pytest.approx(d.sigma(), rel=1e-12)


def test_sampling_matches_parameters_and_seed():
    d = DistributionCI("lognormal", 70, 9.84, 290)
    x = d.sample(np.random.default_rng(3), 200_000)
    assert np.median(x) == pytest.approx(53.42, rel=0.02)
    assert np.std(np.log(x)) == pytest.approx(d.sigma(), rel=0.01)
    assert np.array_equal(x[:10], d.sample(np.random.default_rng(3), 10))
    assert np.all(DistributionCI("delta", 50, 60, 60).sample(np.random.default_rng(0), 5) == 60)


@pytest.mark.parametrize(
    "obj",
    [
        {"kind": "normal"},
        {"kind": "weird", "lo": 1, "hi": 2, "width": 80},
        {"kind": "lognormal", "width": 80, "lo": -1, "hi": 2},
        "text",
        {"kind": "normal", "width": 120, "lo": 1, "hi": 2},
        {"kind": "normal", "width": 80, "lo": 3, "hi": 2, "extra": 1},
    ],
)
def test_malformed_distribution(obj):
    with pytest.raises(AlignlabError):
        DistributionCI.from_obj(obj)


def test_from_number_is_delta():
    d = DistributionCI.from_obj(60)
    assert d.kind == "delta" and d.median() == 60 and math.isclose(d.sigma(), 0)
