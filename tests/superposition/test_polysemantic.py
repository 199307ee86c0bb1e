import numpy as np
import pytest

from alignlab.superposition.polysemantic import (
    HADAMARD_4,
    pentagon,
    run_c1,
    run_c1_trained,
    run_c2,
    run_c3,
    run_c3_xor,
    run_superposition,
)


def test_c1_rotated_orthogonal_basis():
    rep = run_c1()
    assert rep.concepts_per_neuron == [4, 2, 2, 2] and rep.poly_frac == 1.0
    np.testing.assert_allclose(rep.R, HADAMARD_4, atol=1e-15)
    assert rep.extra["gram_error"] <= 1e-12 and rep.guard.decode_error <= 1e-9
    assert rep.guard.dims == [1.0] * 4 and rep.guard.max_abs_cos <= 1e-9 and rep.guard.holds
    assert rep.guard.n_features <= rep.guard.n_neurons
    assert rep.extra["poly_frac_after_rotation"] == 0.0  # a basis choice, unlike superposition


def test_c2_nonlinear_feature():
    rep = run_c2()
    assert rep.concepts_per_neuron == [1, 1, 3, 3] and rep.poly_frac == 0.5
    assert rep.extra["active_bins"] == [4, 4, 6, 6]
    assert rep.guard.decode_error <= 1e-9 and rep.guard.n_features == 1 < rep.guard.n_neurons
    assert 0.6 <= rep.extra["affine_probe_r2"] <= 0.75
    # Sawtooth Fourier series: R^2 = (1/(2 pi^2))(1 + 1/9) / (1/12).
    assert rep.extra["affine_probe_r2"] == pytest.approx(6 * (1 + 1 / 9) / np.pi**2, abs=1e-3)


def test_c3_compositional_code():
    objects, attributes = run_c3()
    assert objects.concepts_per_neuron == [4, 4, 4] and objects.poly_frac == 1.0
    np.testing.assert_array_equal(attributes.R, np.eye(3))
    assert attributes.poly_frac == 0.0
    assert objects.extra["readout_correct"] == 8 and objects.extra["readout_margin"] == pytest.approx(1.0)
    assert objects.guard.holds and objects.guard.n_features == objects.guard.n_neurons == 3


def test_c3_xor_neuron_fires_on_two_unrelated_conjunctions():
    rep = run_c3_xor()
    assert rep.extra["xor_exact"]
    assert sorted(rep.extra["xor_active"]) == ["blue & square", "red & round"]
    assert rep.concepts_per_neuron[2] == 2


def test_superposition_contrast_fails_the_guard():
    rep = run_superposition()
    assert rep.guard.n_features == 5 > rep.guard.n_neurons == 2 and not rep.guard.holds
    assert rep.guard.max_abs_cos == pytest.approx(np.cos(np.radians(36)))
    np.testing.assert_allclose(rep.guard.dims, 0.4)
    # No rotation of the two neurons makes them monosemantic, unlike C1.
    assert rep.extra["min_poly_frac_over_rotations_abs"] == 1.0
    aligned = run_superposition(pentagon(phase_deg=0.0))
    assert aligned.poly_frac < 1.0 or aligned.extra["min_poly_frac_over_rotations_abs"] == 1.0


def test_c1_trained_companion_is_an_orthogonal_rotation():
    out = run_c1_trained(seed=0, replicates=2, steps=800)
    for row in out["replicates"]:
        assert min(row["dims"]) > 0.95  # each feature keeps its own dimension: no superposition
        assert len(row["concepts_per_neuron_abs"]) == 4
    # No privileged basis: the learned rotation mixes features in some neuron.
    assert max(max(row["concepts_per_neuron_abs"]) for row in out["replicates"]) >= 2
