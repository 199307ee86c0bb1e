import numpy as np
import pytest

from alignlab.errors import AlignlabError
from alignlab.superposition.response import (
    Guard,
    active_concepts,
    concepts_per_neuron,
    count_runs,
    response_matrix,
)


def test_runs_are_circular():
    assert count_runs(np.array([1, 1, 0, 0, 0, 1], bool)) == 1
    assert count_runs(np.array([1, 0, 1, 0, 1, 0], bool)) == 3
    assert count_runs(np.zeros(4, bool)) == 0 and count_runs(np.ones(4, bool)) == 1


def test_active_needs_positive_and_half_of_max():
    R = np.array([[1.0, 0.5, 0.49, -2.0], [-1.0, -0.5, 0.0, 0.0]])
    active = active_concepts(R)
    assert active.tolist() == [[True, True, False, False], [False, False, False, False]]
    assert active_concepts(R, absolute=True)[1].tolist() == [True, True, False, False]
    assert concepts_per_neuron(active) == [2, 0]


def test_response_is_mean_minus_baseline():
    R = response_matrix([np.array([[1.0, 2.0], [3.0, 2.0]]), np.array([[0.0, 0.0]])], baseline=np.array([1.0, 1.0]))
    np.testing.assert_allclose(R, [[1.0, -1.0], [1.0, -1.0]])
    with pytest.raises(AlignlabError, match="probe"):
        response_matrix([np.zeros((0, 2))], baseline=np.zeros(2))


def test_guard():
    assert Guard(2, 2, 0.0, [1.0, 1.0], 0.0).holds
    assert not Guard(3, 2, 0.0, [1.0, 1.0, 1.0], 0.0).holds
    assert not Guard(2, 2, 0.1, [1.0, 1.0], 0.0).holds
    assert not Guard(1, 4, None, None, 1e-3).holds
    assert Guard(1, 4, None, None, 1e-12).holds
