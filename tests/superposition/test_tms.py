import dataclasses

import numpy as np
import torch

from alignlab.superposition.numpy_backend import train_numpy
from alignlab.superposition.presets import experiment_config
from alignlab.superposition.runs import train_with_restarts
from alignlab.superposition.tms import init_params, make_generator, sample_batch, train_torch


def injected(cfg, steps, seed=5):
    gen = make_generator(seed)
    W0, _ = init_params(cfg, gen)
    prob = torch.tensor(cfg.feature_prob)
    return W0, [sample_batch(cfg, prob, gen).clone() for _ in range(steps)]


def test_backend_parity_after_100_intro_steps():
    cfg = experiment_config("intro", steps=100)
    W0, batches = injected(cfg, 100)
    a = train_torch(cfg, W0=W0, batches=batches, progress=False)
    b = train_numpy(cfg, W0=W0.numpy(), batches=[x.numpy() for x in batches])
    assert np.abs(a.W - W0.numpy()).max() > 1e-2  # it did train
    assert np.abs(a.W - b.W).max() <= 1e-4 * np.abs(a.W).max()
    assert np.abs(a.b - b.b).max() <= 1e-4 * np.abs(a.b).max()
    np.testing.assert_allclose(a.loss_history, b.loss_history, rtol=1e-4)


def test_fused_gradients_match_autograd():
    for linear, signed in ((False, False), (True, False), (False, True)):
        cfg = dataclasses.replace(experiment_config("intro", steps=30, batch=64), linear=linear, signed=signed)
        W0, batches = injected(cfg, 30)
        a = train_torch(cfg, W0=W0, batches=batches, progress=False)
        b = train_torch(cfg, W0=W0, batches=batches, progress=False, grad="autograd")
        np.testing.assert_allclose(a.W, b.W, atol=1e-5)
        np.testing.assert_allclose(a.b, b.b, atol=1e-5)


def test_adam_preset_parity():
    cfg = experiment_config("intro", "arena-v3", steps=40)
    W0, batches = injected(cfg, 40)
    a = train_torch(cfg, W0=W0, batches=batches, progress=False)
    b = train_numpy(cfg, W0=W0.numpy(), batches=[x.numpy() for x in batches])
    np.testing.assert_allclose(a.W, b.W, atol=1e-5)


def test_sampler_law():
    cfg = dataclasses.replace(experiment_config("intro", batch=40_000))
    x = sample_batch(cfg, torch.tensor(cfg.feature_prob), make_generator(0)).numpy()
    assert x.shape == (10, 40_000, 5) and x.min() >= 0 and x.max() <= 1
    for k, p in enumerate(cfg.feature_prob):
        nz = x[k][x[k] > 0]
        assert abs(nz.size / x[k].size - p) < 0.01
        assert abs(nz.mean() - 0.5) < 0.02 and abs(np.mean(nz < 0.25) - 0.25) < 0.02  # uniform values
    signed = sample_batch(dataclasses.replace(cfg, signed=True), torch.tensor(cfg.feature_prob), make_generator(0))
    assert signed.min() < -0.9 and abs(signed[0].mean().item()) < 0.01


def test_same_seed_same_weights_and_loss_falls():
    cfg = experiment_config("intro", steps=200, batch=128)
    a = train_torch(cfg, progress=False)
    b = train_torch(cfg, progress=False)
    assert np.array_equal(a.W, b.W)
    assert a.loss_history[-1].sum() < 0.8 * a.loss_history[0].sum()
    c = train_torch(dataclasses.replace(cfg, seed=1), progress=False)
    assert not np.array_equal(a.W, c.W)


def test_restarts_keep_lowest_held_out_loss():
    cfg = experiment_config("intro", steps=150, batch=64)
    run = train_with_restarts(cfg, restarts=3)
    assert run.held_out_loss.shape == (3, cfg.L)
    np.testing.assert_array_equal(run.chosen, run.held_out_loss.argmin(0))
    assert run.restart_seeds == [0, 10_000, 20_000]
