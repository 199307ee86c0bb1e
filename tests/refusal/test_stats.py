from __future__ import annotations

import math

import pytest

from alignlab.errors import AlignlabError
from alignlab.refusal.stats import mcnemar_exact, mcnemar_exact_counts, rate, rate_of, wilson


@pytest.mark.parametrize(("k", "n", "low", "high"), [(0, 100, 0.0, 0.037), (50, 100, 0.404, 0.596),
                                                      (95, 100, 0.888, 0.979)])
def test_wilson_spec_values(k, n, low, high):
    # spec §3.5 lists 3-decimal values; 95/100's upper bound is 0.97846 (the spec rounds it to 0.979)
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=1e-3) and hi == pytest.approx(high, abs=1e-3)


def test_wilson_exact_values():
    lo, hi = wilson(95, 100)
    assert lo == pytest.approx(0.888248, abs=1e-6) and hi == pytest.approx(0.978457, abs=1e-6)
    assert wilson(0, 100)[1] == pytest.approx(0.036995, abs=1e-6)


def test_wilson_edges_and_symmetry():
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(100, 100)
    assert hi == 1.0 and lo == pytest.approx(1 - wilson(0, 100)[1], abs=1e-12)
    lo3, hi3 = wilson(3, 10)
    assert lo3 == pytest.approx(1 - wilson(7, 10)[1], abs=1e-12)
    with pytest.raises(AlignlabError):
        wilson(5, 3)


def test_rate_object():
    r = rate_of([True, False, True, True])
    assert (r.k, r.n, r.rate) == (3, 4, 0.75) and r.low_n
    assert str(rate(1, 2)).startswith("1/2 = 0.500 [")
    assert not rate(10, 10).low_n and math.isnan(rate(0, 0).rate)


def test_mcnemar_exact():
    assert mcnemar_exact_counts(0, 0) == 1.0
    assert mcnemar_exact_counts(0, 5) == pytest.approx(2 / 32)  # 2 * 0.5^5
    assert mcnemar_exact_counts(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact_counts(5, 5) == 1.0
    before = [True] * 10 + [False] * 10
    after = [False] * 10 + [False] * 10  # 10 discordant, all one way
    assert mcnemar_exact(before, after) == pytest.approx(2 / 1024)
    assert mcnemar_exact(before, before) == 1.0
    with pytest.raises(AlignlabError, match="paired"):
        mcnemar_exact([True], [True, False])
