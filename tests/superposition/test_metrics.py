import numpy as np
import pytest

from alignlab.errors import AlignlabError
from alignlab.superposition.metrics import (
    cluster_counts,
    dimensionality,
    dims_per_feature,
    feature_norms,
    interference,
    line_test,
    represented,
)


def polygon(k: int, norm: float = 1.0) -> np.ndarray:
    ang = 2 * np.pi * np.arange(k) / k
    return norm * np.stack([np.cos(ang), np.sin(ang)], axis=1)


def test_orthogonal_pair_is_one_dimension_each():
    W = np.eye(2)
    np.testing.assert_allclose(dimensionality(W)[0], [1.0, 1.0])
    np.testing.assert_allclose(interference(W)[0], [0.0, 0.0])


def test_antipodal_pair_is_half_with_interference_one():
    W = np.array([[1.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(dimensionality(W)[0], [0.5, 0.5])
    np.testing.assert_allclose(interference(W)[0], [1.0, 1.0])


@pytest.mark.parametrize("k,expected", [(3, 2 / 3), (5, 2 / 5)])
def test_regular_polygons(k, expected):
    np.testing.assert_allclose(dimensionality(polygon(k))[0], expected, atol=1e-12)


def test_pentagon_dimensionality_is_norm_free_but_d_star_is_not():
    W = polygon(5, norm=1.12)
    np.testing.assert_allclose(dimensionality(W)[0], 0.4, atol=1e-12)
    assert dims_per_feature(W)[0] == pytest.approx(2 / (5 * 1.12**2))  # ~0.32 (spec §4)


def test_tetrahedron_is_three_quarters():
    W = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float) / np.sqrt(3)
    np.testing.assert_allclose(dimensionality(W)[0], 0.75, atol=1e-12)


def test_square_antiprism_tight_frame_is_three_eighths():
    h = 1 / np.sqrt(3)
    r = np.sqrt(1 - h**2)
    top = [(r * np.cos(a), r * np.sin(a), h) for a in np.pi / 2 * np.arange(4)]
    bottom = [(r * np.cos(a), r * np.sin(a), -h) for a in np.pi / 2 * np.arange(4) + np.pi / 4]
    W = np.array(top + bottom)
    np.testing.assert_allclose(W.T @ W, (8 / 3) * np.eye(3), atol=1e-12)  # tight frame
    np.testing.assert_allclose(dimensionality(W)[0], 3 / 8, atol=1e-12)


def test_d_star_matches_frobenius_on_random_w():
    W = np.random.default_rng(0).normal(size=(3, 7, 4))
    np.testing.assert_allclose(dims_per_feature(W), 4 / (W**2).sum(axis=(1, 2)))
    assert feature_norms(W).shape == (3, 7)


def test_represented_threshold_is_half():
    W = np.array([[0.51, 0.0], [0.0, 0.49]])
    assert represented(W)[0].tolist() == [True, False]


def test_dropped_feature_has_zero_dimensionality_and_no_nan():
    W = np.array([[1.0, 0.0], [0.0, 0.0]])
    D = dimensionality(W)[0]
    assert D[0] == pytest.approx(1.0) and D[1] == pytest.approx(0.0) and np.all(np.isfinite(D))


def test_nan_weights_raise_one_line_error():
    with pytest.raises(AlignlabError, match="NaN"):
        dimensionality(np.array([[np.nan, 0.0]]))
    with pytest.raises(AlignlabError, match="shape"):
        dimensionality(np.zeros((2, 2, 2, 2)))


def test_line_test_centre_and_flanks():
    D = np.array([0.5] * 12 + [0.488] * 3 + [0.05] * 30)
    t = line_test(D, d_star=0.6, fraction=0.5)
    assert (t.centre, t.flank, t.present) == (12, 3, True)
    smeared = np.linspace(0.47, 0.53, 60)  # a smear, not a line: flanks as full as the centre
    assert not line_test(smeared, d_star=0.6, fraction=0.5).present
    assert not line_test(D, d_star=0.97, fraction=0.5).present  # level does not qualify
    assert not line_test(D[:9], d_star=0.6, fraction=0.5).present  # fewer than 10 in the centre


def test_cluster_counts_skip_small_dims():
    D = np.array([0.5, 0.51, 0.39, 0.05, 0.66])  # 0.39 is near both 2/5 and 3/8
    assert cluster_counts(D) == {"3/4": 0, "2/3": 1, "1/2": 2, "2/5": 1, "3/8": 1}
