import dataclasses
import math

import numpy as np
import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.superposition.config import TMSConfig
from alignlab.superposition.presets import PHASE_PROBS, PHASE_RATIOS, experiment_config, select_instances
from alignlab.superposition.tms import init_params, make_generator


def test_xavier_std_formula_and_sample():
    cfg = experiment_config("dims")  # L=20, n=200, m=20
    assert cfg.init_std() == math.sqrt(2 / (cfg.m * (cfg.n + cfg.L)))
    W, b = init_params(cfg, make_generator(0))
    assert W.shape == (20, 200, 20) and torch.count_nonzero(b) == 0
    assert abs(W.std().item() / cfg.init_std() - 1) < 0.02


def test_per_instance_std():
    cfg = dataclasses.replace(experiment_config("dims"), init="per_instance")
    assert cfg.init_std() == math.sqrt(2 / (200 + 20))
    W, _ = init_params(cfg, make_generator(1))
    assert abs(W.std().item() / cfg.init_std() - 1) < 0.02


def test_intro_schedules():
    cfg = experiment_config("intro")
    assert (cfg.n, cfg.m, cfg.L, cfg.optimizer, cfg.weight_decay) == (5, 2, 10, "adamw", 0.01)
    np.testing.assert_allclose(cfg.importance, 0.9 ** np.arange(5))
    assert cfg.feature_prob[0] == 1.0 and cfg.feature_prob[-1] == pytest.approx(0.05)
    arena = experiment_config("intro", "arena-v3")
    assert (arena.L, arena.optimizer, arena.effective_weight_decay) == (8, "adam", 0.0)
    assert arena.feature_prob[-1] == pytest.approx(1 / 50)


def test_features_and_phase_grids():
    feats = experiment_config("features")
    assert feats.importance[0] == 1.0 and feats.importance[-1] == pytest.approx(0.01)
    phase = experiment_config("phase")
    assert phase.L == 121 and phase.init == "per_instance"
    assert phase.importance_rows()[0] == [1.0, PHASE_RATIOS[0]] and phase.feature_prob[:11] == PHASE_PROBS


def test_lr_schedules():
    cfg = experiment_config("intro", steps=100)
    assert cfg.lr_at(50) == 1e-3
    assert dataclasses.replace(cfg, lr_schedule="linear").lr_at(50) == pytest.approx(5e-4)
    assert dataclasses.replace(cfg, lr_schedule="cosine").lr_at(50) == pytest.approx(5e-4)
    assert dataclasses.replace(cfg, lr_schedule="cosine").lr_at(0) == pytest.approx(1e-3)


def test_select_instances_keeps_rows():
    cfg = select_instances(experiment_config("phase"), [0, 120])
    assert cfg.L == 2 and cfg.importance_rows() == [[1.0, PHASE_RATIOS[0]], [1.0, PHASE_RATIOS[-1]]]
    with pytest.raises(AlignlabError, match="instance indices"):
        select_instances(cfg, [5])


@pytest.mark.parametrize("bad,match", [
    (dict(feature_prob=(0.0,)), "feature_prob"),
    (dict(importance=(1.0, 2.0)), "importance"),
    (dict(lr=float("nan")), "lr"),
    (dict(steps=0), "steps"),
    (dict(optimizer="sgd"), "optimizer"),
])
def test_validation(bad, match):
    base = dict(n=3, m=2, L=1, importance=(1.0, 1.0, 1.0), feature_prob=(0.5,))
    with pytest.raises(AlignlabError, match=match):
        TMSConfig(**{**base, **bad})


def test_unknown_experiment_or_preset():
    with pytest.raises(AlignlabError, match="experiment"):
        experiment_config("nope")
    with pytest.raises(AlignlabError, match="preset"):
        experiment_config("intro", "nope")
