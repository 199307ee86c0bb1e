"""Spec §9 dims gates (seed 0) on reduced schedules.

The 20 levels are independent instances, so each test trains only the levels it checks:
plateau/ends: levels k = 0, 5, 6, 7, 8, 19 (1/(1-S) = 1, 2.20, 2.58, 3.03, 3.53, 20), 1500 steps;
other lines: k = 9, 10, 11 (4.13, 4.84, 5.67), 3000 steps. Both: batch 256, lr 1e-2 decaying linearly to 0
(notebook: 10 000 steps, batch 1024, constant 1e-3; see bench/superposition_full.py for that run).
"""

import pytest

from alignlab.superposition.dims import plateau_run, run_dims
from alignlab.superposition.presets import experiment_config, select_instances

QUICK = dict(batch=256, lr=1e-2, lr_schedule="linear")


@pytest.fixture(scope="module")
def plateau_levels():
    cfg = select_instances(experiment_config("dims", seed=0, steps=1500, **QUICK), [0, 5, 6, 7, 8, 19])
    return run_dims(cfg, progress=False).levels


@pytest.fixture(scope="module")
def sparse_levels():
    cfg = select_instances(experiment_config("dims", seed=0, steps=3000, **QUICK), [9, 10, 11])
    return run_dims(cfg, progress=False).levels


def test_ends(plateau_levels):
    assert plateau_levels[0].inv_density == 1.0 and 0.95 <= plateau_levels[0].d_star <= 1.05
    assert plateau_levels[-1].inv_density == pytest.approx(20.0) and plateau_levels[-1].d_star <= 0.2


def test_half_plateau_and_half_line(plateau_levels):
    assert plateau_run(plateau_levels) >= 3
    assert any(lv.lines["1/2"].present for lv in plateau_levels if 2 <= lv.inv_density <= 4)
    dense = plateau_levels[0]
    assert not any(t.present for t in dense.lines.values())  # D* >= 0.95: no level qualifies


def test_another_sticky_line(sparse_levels):
    found = [(round(lv.inv_density, 2), name) for lv in sparse_levels for name in ("2/3", "2/5", "3/8")
             if lv.lines[name].present]
    assert found, [(lv.inv_density, {k: (t.centre, t.flank) for k, t in lv.lines.items()}) for lv in sparse_levels]


def test_clusters_not_everything(sparse_levels):
    # Clusters exist, but not every feature sits on a fraction (spec §4: about a quarter in the notebook).
    lv = sparse_levels[-1]
    assert lv.n_dims_above_0_1 > sum(lv.clusters.values()) / 2 > 0
