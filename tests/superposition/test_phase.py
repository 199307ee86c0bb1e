"""Spec §9 phase corners, on the corner cells of the grid (each cell is an independent instance).

Reduced schedule: 3000 steps, lr 1e-2 decaying linearly, best of 3 restarts (the CLI default); a single run at
(p = 0.01, r = 1) often stops in the local optimum that drops one feature.
"""

import pytest

from alignlab.superposition.phase import classify, find_cell, phase_table, run_phase
from alignlab.superposition.presets import PHASE_PROBS, PHASE_RATIOS, experiment_config, select_instances


def index(r_idx: int, p_idx: int) -> int:
    return r_idx * len(PHASE_PROBS) + p_idx


@pytest.fixture(scope="module")
def cells():
    keep = [index(0, 10), index(10, 10), index(5, 0), index(5, 5)]  # (r=.1,p=1) (r=10,p=1) (r=1,p=.01) (r=1,p=.1)
    cfg = select_instances(experiment_config("phase", steps=3000, batch=1024, lr=1e-2, lr_schedule="linear"), keep)
    return run_phase(cfg, restarts=3, progress=False).cells


def test_corners(cells):
    assert find_cell(cells, 1.0, 0.1).phase == "feature 2 dropped"
    assert find_cell(cells, 1.0, 10.0).phase == "feature 1 dropped"
    sparse = find_cell(cells, 0.01, 1.0)
    assert sparse.phase == "superposition" and sparse.dot < 0
    assert PHASE_RATIOS[5] == pytest.approx(1.0) and PHASE_PROBS[0] == pytest.approx(0.01)


def test_classify_and_table():
    assert classify(0.9, 0.1) == "feature 2 dropped"
    assert classify(0.1, 0.9) == "feature 1 dropped"
    assert classify(0.1, 0.1) == "none"
    assert classify(0.6, 0.7) == "superposition"


def test_table_marks_antipodal(cells):
    assert "S*" in phase_table(cells)
