import numpy as np
import pytest

from alignlab.errors import AlignlabError
from alignlab.superposition.geometry import geometry_2d


def rows(*angles_deg, norm=1.0):
    a = np.radians(angles_deg)
    return norm * np.stack([np.cos(a), np.sin(a)], axis=1)


def pad(W, n=5):
    return np.concatenate([W, np.zeros((n - len(W), 2))]) if len(W) < n else W


def test_orthogonal_pair_with_dropped_features():
    geo = geometry_2d(pad(rows(10, 100)), np.zeros(5))
    assert geo.arrangement == "orthogonal" and geo.represented == [0, 1]
    assert geo.gaps_deg == pytest.approx([270, 90])


def test_antipodal_pair_plus_orthogonal():
    geo = geometry_2d(pad(rows(0, 180, 90)), np.zeros(5))
    assert geo.arrangement == "antipodal" and geo.antipodal_pairs == [(0, 1)]
    assert geo.detail == "1 antipodal pair + 1 orthogonal"


def test_two_antipodal_pairs():
    geo = geometry_2d(pad(rows(30, 210, 120, 300)), np.zeros(5))
    assert geo.arrangement == "antipodal" and len(geo.antipodal_pairs) == 2


def test_pentagon_and_near_miss():
    geo = geometry_2d(rows(0, 72, 144, 216, 288, norm=1.12), -0.23 * np.ones(5))
    assert geo.arrangement == "pentagon" and geo.biases == pytest.approx([-0.23] * 5)
    assert geometry_2d(rows(0, 60, 144, 216, 288), np.zeros(5)).arrangement == "other"


def test_single_none_triangle():
    assert geometry_2d(pad(rows(45)), np.zeros(5)).arrangement == "single"
    assert geometry_2d(np.zeros((5, 2)), np.zeros(5)).arrangement == "none"
    assert geometry_2d(pad(rows(0, 120, 240)), np.zeros(5)).arrangement == "triangle"
    assert geometry_2d(pad(rows(0, 45)), np.zeros(5)).arrangement == "other"


def test_needs_two_dimensions():
    with pytest.raises(AlignlabError, match="m = 2"):
        geometry_2d(np.zeros((5, 3)), np.zeros(5))
