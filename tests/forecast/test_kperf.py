import math

import pytest

from alignlab.errors import AlignlabError
from alignlab.forecast.kperf import coded_constant, k_performance, kl_for_k, liu_constant, wald_constant


def test_reference_k_is_2_5359_s_over_kl_at_c_0_9():
    for kl, s in [(0.14, 1.0), (0.05, 53.4), (1.3, 10.0)]:
        assert k_performance(kl, s, 0.9, "bits") == pytest.approx(2.5359 * s / kl, rel=0, abs=1e-4 * s / kl)
    assert coded_constant(0.9) == pytest.approx(2.5359, abs=1e-4)


def test_consistent_k_is_1_7578_s_over_kl():
    assert wald_constant(0.9, "nats") == pytest.approx(1.7578, abs=1e-4)
    assert k_performance(0.14, 10, 0.9, "nats") == pytest.approx(1.7578 * 10 / 0.14, rel=1e-4)


@pytest.mark.parametrize("c", [0.6, 0.75, 0.9, 0.99])
def test_coded_equals_wald_over_ln2(c):
    wald = (2 * c - 1) * math.log(c / (1 - c))
    assert coded_constant(c) == pytest.approx(wald / math.log(2), rel=1e-12)
    assert wald_constant(c, "bits") == pytest.approx(coded_constant(c), rel=1e-12)
    # the two modes differ by exactly 1/ln 2 = 1.4427 for any KL and slowdown
    ratio = k_performance(0.2, 7, c, "bits") / k_performance(0.2, 7, c, "nats")
    assert ratio == pytest.approx(1.4427, abs=1e-4)


def test_liu_example_165_tokens():
    # Liu: GPT-4 at ~0.14 nats/token, s = 10, r = 10 -> T* ~ 165 tokens (his "~170 tokens ~ 150 words")
    assert liu_constant(10) == pytest.approx(2.303, abs=1e-3)
    assert k_performance(0.14, 10, criterion="liu") == pytest.approx(164.5, abs=0.1)


def test_inverse_round_trips():
    k = k_performance(0.123, 4.0, 0.8, "nats")
    assert kl_for_k(k, 4.0, 0.8, "nats") == pytest.approx(0.123, rel=1e-12)


@pytest.mark.parametrize("c", [0.0, 1.0, 1.5, -0.2, 0.5])
def test_bad_confidence_is_one_line_error(c):
    with pytest.raises(AlignlabError) as exc:
        k_performance(0.1, 1.0, c)
    assert "\n" not in str(exc.value)


def test_bad_kl_and_slowdown():
    with pytest.raises(AlignlabError):
        k_performance(-0.1)
    with pytest.raises(AlignlabError):
        k_performance(0.1, slowdown=0)
