"""NumPy port of the TMS training loop (float32, hand-written gradients and AdamW), for parity tests.

It mirrors ``tms.fused_grads`` and torch's AdamW/Adam update; torch remains the default backend.
"""

from __future__ import annotations

import numpy as np

from alignlab.superposition.config import TMSConfig
from alignlab.superposition.tms import TrainResult

ADAM_BETAS = (0.9, 0.999)  # torch defaults (spec §3.4)
ADAM_EPS = 1e-8


def numpy_grads(W: np.ndarray, b: np.ndarray, x: np.ndarray, importance: np.ndarray,
                linear: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(losses [L], dW [L, n, m], db [L, n]) of the summed importance-weighted MSE."""
    L, B, n = x.shape
    target = np.abs(x)
    h = x @ W  # [L, B, m]
    pre = h @ W.transpose(0, 2, 1) + b[:, None, :]  # [L, B, n]
    g = (pre if linear else np.maximum(pre, 0)) - target
    losses = (importance[:, None, :] * g**2).mean(axis=(1, 2))
    if not linear:
        g = np.where(pre > 0, g, 0).astype(x.dtype)
    c = (importance * (2.0 / (B * n))).astype(x.dtype)  # [L, n]
    dW = (g.transpose(0, 2, 1) @ h) * c[:, :, None]
    dh = g @ (W * c[:, :, None])  # [L, B, m]
    dW = dW + x.transpose(0, 2, 1) @ dh
    db = g.sum(axis=1) * c
    return losses, dW, db


def sample_batch_numpy(cfg: TMSConfig, rng: np.random.Generator) -> np.ndarray:
    """Same law as ``tms.sample_batch`` (its own stream). Returns float32 [L, batch, n]."""
    r = rng.random((cfg.L, cfg.batch, cfg.n), dtype=np.float32)
    p = np.asarray(cfg.feature_prob, dtype=np.float32)[:, None, None]
    x = np.maximum(1.0 - r / p, 0.0).astype(np.float32)
    return np.where(x > 0, 2 * x - 1, x).astype(np.float32) if cfg.signed else x


def train_numpy(cfg: TMSConfig, W0: np.ndarray | None = None, batches: list[np.ndarray] | None = None) -> TrainResult:
    """Train like ``train_torch`` with NumPy. Without ``W0`` the init is drawn from numpy (std of cfg.init_std())."""
    rng = np.random.default_rng(cfg.seed)
    if W0 is None:
        W = (rng.standard_normal((cfg.L, cfg.n, cfg.m)) * cfg.init_std()).astype(np.float32)
    else:
        W = np.array(W0, dtype=np.float32)
    b = np.zeros((cfg.L, cfg.n), dtype=np.float32)
    importance = np.asarray(cfg.importance_rows(), dtype=np.float32)
    params, moments = [W, b], [[np.zeros_like(W), np.zeros_like(W)], [np.zeros_like(b), np.zeros_like(b)]]
    beta1, beta2 = ADAM_BETAS
    wd = cfg.effective_weight_decay
    logs: list[np.ndarray] = []
    logged: list[int] = []
    for step in range(cfg.steps):
        lr = cfg.lr_at(step)
        x = batches[step] if batches is not None else sample_batch_numpy(cfg, rng)
        x = np.asarray(x, dtype=np.float32)
        losses, dW, db = numpy_grads(params[0], params[1], x, importance, cfg.linear)
        t = step + 1
        for k, grad in enumerate((dW, db)):
            p = params[k]
            if cfg.optimizer == "adamw":
                p *= np.float32(1.0 - lr * wd)  # decoupled weight decay (torch AdamW)
            m1, m2 = moments[k]
            m1 *= beta1
            m1 += (1 - beta1) * grad
            m2 *= beta2
            m2 += (1 - beta2) * grad * grad
            denom = np.sqrt(m2) / np.sqrt(1 - beta2**t) + ADAM_EPS
            p -= (lr / (1 - beta1**t)) * m1 / denom
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            logs.append(losses.astype(np.float64))
            logged.append(step)
    return TrainResult(W=params[0].astype(np.float64), b=params[1].astype(np.float64),
                       loss_history=np.stack(logs), logged_steps=np.asarray(logged), backend="numpy")
