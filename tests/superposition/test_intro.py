"""Spec §9 intro gates on seed 0, with a reduced schedule that still shows every regime.

Test schedule: 3000 steps, batch 256, lr 3e-3 (notebook: 10 000 / 1024 / 1e-3), best of 4 restarts by held-out
loss. The full schedule runs in ``alignlab superposition intro`` and bench/superposition_full.py.
"""

import numpy as np
import pytest

from alignlab.superposition.intro import run_intro
from alignlab.superposition.presets import experiment_config

QUICK = dict(steps=3000, batch=256, lr=3e-3)


@pytest.fixture(scope="module")
def intro():
    return run_intro(experiment_config("intro", seed=0, **QUICK), restarts=4, progress=False)


def test_dense_level_keeps_the_two_most_important_features_orthogonal(intro):
    lv = intro.levels[0]
    assert lv.feature_prob == 1.0
    assert sorted(lv.geometry.represented) == [0, 1]  # the list is ordered by angle
    angle = abs(lv.geometry.angles_deg[0] - lv.geometry.angles_deg[1]) % 360
    assert abs(min(angle, 360 - angle) - 90) <= 5
    assert 0.95 <= lv.d_star <= 1.05
    assert lv.arrangement == "orthogonal"


def test_two_sparsest_levels_are_pentagons(intro):
    for lv in intro.levels[-2:]:
        assert lv.n_represented == 5
        assert all(abs(g - 72) <= 6 for g in lv.geometry.gaps_deg), lv.geometry.gaps_deg
        assert max(lv.geometry.biases) < 0
        assert 0.28 <= lv.d_star <= 0.36
        assert lv.arrangement == "pentagon"
        np.testing.assert_allclose(lv.dims, 0.4, atol=0.03)


def test_an_intermediate_level_has_an_antipodal_pair(intro):
    middle = intro.levels[1:-2]
    assert any(lv.geometry.antipodal_pairs for lv in middle)
    assert any(lv.arrangement == "antipodal" for lv in middle)
    # Progression endpoints: superposition grows with sparsity.
    assert intro.levels[0].d_star > intro.levels[len(intro.levels) // 2].d_star > intro.levels[-1].d_star


def test_kept_restart_has_the_lowest_held_out_loss(intro):
    run = intro.run
    for k, lv in enumerate(intro.levels):
        assert lv.held_out_loss == pytest.approx(run.held_out_loss[:, k].min())
