import math

import numpy as np
import pytest

from alignlab.forecast.inversion import log10_compute_for_k, log10_compute_point, log10_k_at_compute
from alignlab.forecast.modes import CORRECTED, GFIX, README_2023, REFERENCE
from alignlab.forecast.scaling import BESIROGLU2024, HOFFMANN2022, PARAM_SETS, draw_noise

# spec §9 deterministic table: (params, k) -> reference s=1, s=53.4, G fix s=1, s=53.4, corrected s=1, s=53.4
TABLE = {
    ("hoffmann2022", 1e2): (31.27, 20.02, 30.13, 18.88, 31.16, 19.91),
    ("hoffmann2022", 1e3): (37.78, 26.53, 36.64, 25.39, 37.68, 26.42),
    ("hoffmann2022", 1e4): (44.29, 33.04, 43.15, 31.90, 44.19, 32.94),
    ("hoffmann2022", 1e5): (50.80, 39.55, 49.66, 38.41, 50.70, 39.45),
    ("besiroglu2024", 1e2): (28.80, 19.11, 28.21, 18.52, 29.10, 19.41),
    ("besiroglu2024", 1e3): (34.41, 24.72, 33.81, 24.12, 34.71, 25.02),
    ("besiroglu2024", 1e4): (40.02, 30.33, 39.42, 29.73, 40.32, 30.63),
    ("besiroglu2024", 1e5): (45.63, 35.94, 45.03, 35.34, 45.92, 36.24),
}


@pytest.mark.parametrize("key", list(TABLE))
def test_deterministic_table(key):
    law = PARAM_SETS[key[0]]
    got = [log10_compute_point(key[1], s, law, m) for m in (REFERENCE, GFIX, CORRECTED) for s in (1.0, 53.4)]
    assert np.allclose(got, TABLE[key], atol=0.01 + 1e-9)


@pytest.mark.parametrize("law", [HOFFMANN2022, BESIROGLU2024])
def test_closed_equals_interpolate_on_noisy_draws(law):
    draws = draw_noise(law, np.random.default_rng(1), 500)
    k = np.full(500, 2e4)
    s = np.full(500, 30.0)
    for g in ("hoffmann", "reference", "no-exponent"):
        m = REFERENCE.__class__("x", k_units="bits", g_formula=g, inversion="closed")
        closed = log10_compute_for_k(k, s, draws, m)
        interp = log10_compute_for_k(k, s, draws, m.__class__("y", "bits", g, "interpolate"))
        assert np.max(np.abs(closed - interp)) < 1e-9


@pytest.mark.parametrize(
    ("law", "units_oom", "g_oom", "net_oom"),
    [(HOFFMANN2022, 1.04, -1.14, -0.10), (BESIROGLU2024, 0.89, -0.60, 0.29)],
)
def test_corrected_differs_by_documented_factors(law, units_oom, g_oom, net_oom):
    ref, gfix, cor = (log10_compute_point(1e4, 1.0, law, m) for m in (REFERENCE, GFIX, CORRECTED))
    slope = (law.alpha + law.beta) / (law.alpha * law.beta)  # m = 1/gamma (spec §6)
    assert cor - gfix == pytest.approx(slope * math.log10(1 / math.log(2)), abs=1e-9)
    assert cor - gfix == pytest.approx(units_oom, abs=0.005)
    assert gfix - ref == pytest.approx(g_oom, abs=0.005)
    assert cor - ref == pytest.approx(net_oom, abs=0.01)


def test_slope_is_one_over_gamma():
    for law, slope in ((HOFFMANN2022, 6.5126), (BESIROGLU2024, 5.6089)):
        a = log10_compute_point(1e3, 1, law, CORRECTED)
        b = log10_compute_point(1e4, 1, law, CORRECTED)
        assert b - a == pytest.approx(slope, abs=1e-4)


def test_inversion_hits_target_k():
    law = HOFFMANN2022
    c = log10_compute_point(1e4, 53.4, law, CORRECTED)
    k = log10_k_at_compute(
        c,
        53.4,
        draw_noise(law, np.random.default_rng(0), 1).__class__(
            np.array([law.A]), np.array([law.B]), np.array([law.alpha]), np.array([law.beta])
        ),
        CORRECTED,
    )
    assert float(k[0]) == pytest.approx(4.0, abs=1e-9)


def test_interpolate_2023_uses_noise_free_low_point():
    law = HOFFMANN2022
    draws = draw_noise(law, np.random.default_rng(5), 200)
    mixed = log10_compute_for_k(1e4, 50.0, draws, README_2023, law)
    same = log10_compute_for_k(
        1e4, 50.0, draws, README_2023.__class__("x", "bits", "no-exponent", "interpolate")
    )
    assert not np.allclose(mixed, same, atol=0.01)
    # with no noise the two lines coincide
    central = draw_noise(
        law.__class__("c", law.A, law.B, law.alpha, law.beta, None, 0, 0, 0, 0), np.random.default_rng(0), 3
    )
    a = log10_compute_for_k(1e4, 50.0, central, README_2023, law)
    b = log10_compute_for_k(
        1e4, 50.0, central, README_2023.__class__("x", "bits", "no-exponent", "interpolate")
    )
    assert np.allclose(a, b, atol=1e-9)
