"""The TMS model trained with torch on the CPU, L instances at once (Elhage et al. 2022, §2; spec §3).

Shapes: W [L, n, m] (row W_i embeds feature i), b [L, n], x [L, batch, n].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from alignlab.errors import AlignlabError
from alignlab.superposition.config import TMSConfig


@dataclass(frozen=True)
class TrainResult:
    """Trained parameters (float64 numpy copies) and the loss curve."""

    W: np.ndarray
    """[L, n, m] feature embeddings."""
    b: np.ndarray
    """[L, n] output biases."""
    loss_history: np.ndarray
    """[n_logs, L] per-instance loss every ``log_every`` steps (last row = final step)."""
    logged_steps: np.ndarray
    """[n_logs] step index of each row of ``loss_history``."""
    backend: str


def make_generator(seed: int) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    return gen


def init_params(cfg: TMSConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial (W [L, n, m], b [L, n]) in float32, drawn from ``gen`` (spec §3.1)."""
    W = torch.empty(cfg.L, cfg.n, cfg.m, dtype=torch.float32)
    if cfg.init == "xavier":
        # Faithful to the notebook: xavier_normal_ on the whole 3-D tensor, so std depends on L.
        torch.nn.init.xavier_normal_(W, generator=gen)
    else:
        W.normal_(0.0, cfg.init_std(), generator=gen)
    b = torch.zeros(cfg.L, cfg.n, dtype=torch.float32)
    return W, b


def sample_batch(cfg: TMSConfig, prob: torch.Tensor, gen: torch.Generator, out: torch.Tensor | None = None) -> torch.Tensor:
    """x = u * z with z ~ Bernoulli(p), u uniform on [0, 1] (or [-1, 1] if signed). Returns [L, batch, n].

    One uniform r per entry: v = ReLU(1 - r/p) is 0 with probability 1 - p and, given r < p, uniform on (0, 1],
    so a single draw yields both z and u (the same law as the notebook's two draws, up to the endpoint).
    """
    r = torch.empty(cfg.L, cfg.batch, cfg.n) if out is None else out  # [L, batch, n]
    r.uniform_(generator=gen)
    r.mul_(-1.0 / prob[:, None, None]).add_(1.0).clamp_(min=0.0)
    if cfg.signed:
        r = torch.where(r > 0, 2.0 * r - 1.0, r)
    return r


def forward(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, linear: bool = False) -> torch.Tensor:
    """x' = ReLU(W^T W x + b) per instance. W [L, n, m], b [L, n], x [L, batch, n] -> [L, batch, n]."""
    h = torch.bmm(x, W)  # [L, batch, m]
    pre = torch.bmm(h, W.transpose(1, 2)) + b[:, None, :]  # [L, batch, n]
    return pre if linear else torch.relu(pre)


def instance_losses(out: torch.Tensor, x: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """Per-instance mean over batch and features of I_i (|x_i| - x'_i)^2 (spec §3.2). Returns [L]."""
    err = importance[:, None, :] * (x.abs() - out) ** 2  # [L, batch, n]
    return err.mean(dim=(1, 2))


def fused_grads(
    W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, importance: torch.Tensor, linear: bool, with_loss: bool
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Hand-derived gradients of the summed loss (same maths as autograd, fewer passes over [L, batch, n]).

    Returns (per-instance losses [L] or None, dW [L, n, m], db [L, n]).
    """
    L, B, n = x.shape
    target = x.abs()  # [L, B, n]; equals x for unsigned data
    h = torch.bmm(x, W)  # [L, B, m]
    pre = torch.baddbmm(b[:, None, :], h, W.transpose(1, 2))  # [L, B, n]
    g = pre - target if linear else torch.relu(pre).sub_(target)  # x' - |x|
    losses = (importance[:, None, :] * g.square()).mean(dim=(1, 2)) if with_loss else None
    if not linear:
        g.masked_fill_(pre <= 0, 0.0)  # ReLU gradient (0 at 0, as torch)
    c = importance * (2.0 / (B * n))  # [L, n]; dloss/dpre = c_i * g
    dW = torch.bmm(g.transpose(1, 2), h).mul_(c[:, :, None])  # [L, n, m], through the decoder use of W
    dh = torch.bmm(g, W * c[:, :, None])  # [L, B, m]
    dW.add_(torch.bmm(x.transpose(1, 2), dh))  # through the encoder use of W
    db = g.sum(dim=1).mul_(c)  # [L, n]
    return losses, dW, db


def train_torch(
    cfg: TMSConfig,
    W0: torch.Tensor | np.ndarray | None = None,
    batches: list[torch.Tensor] | None = None,
    progress: bool | None = None,
    grad: str = "fused",
) -> TrainResult:
    """Train all L instances jointly with the summed loss.

    ``W0`` and ``batches`` (one [L, batch, n] tensor per step) may be injected for parity tests; otherwise one
    generator seeded with ``cfg.seed`` draws the initialisation and then every batch. ``grad="autograd"`` is the
    eager reference for the default hand-derived ``"fused"`` gradients.
    """
    if grad not in ("fused", "autograd"):
        raise AlignlabError(f"grad must be fused or autograd (got {grad!r})")
    gen = make_generator(cfg.seed)
    W_init, b_init = init_params(cfg, gen)
    if W0 is not None:
        W_init = torch.as_tensor(np.asarray(W0), dtype=torch.float32).clone()
    W = torch.nn.Parameter(W_init)
    b = torch.nn.Parameter(b_init)
    importance = torch.tensor(cfg.importance_rows(), dtype=torch.float32)  # [L, n]
    prob = torch.tensor(cfg.feature_prob, dtype=torch.float32)  # [L]
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls([W, b], lr=cfg.lr, weight_decay=cfg.effective_weight_decay, foreach=True)
    buf = torch.empty(cfg.L, cfg.batch, cfg.n) if batches is None else None
    logs: list[np.ndarray] = []
    logged: list[int] = []
    disable = None if progress is None else not progress  # None: quiet when not a TTY
    bar = tqdm(range(cfg.steps), desc=f"train n={cfg.n} m={cfg.m} L={cfg.L}", disable=disable, leave=False)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        x = batches[step] if batches is not None else sample_batch(cfg, prob, gen, out=buf)
        log_now = step % cfg.log_every == 0 or step == cfg.steps - 1
        if grad == "fused":
            with torch.no_grad():
                losses, W.grad, b.grad = fused_grads(W, b, x, importance, cfg.linear, log_now)
        else:
            losses = instance_losses(forward(W, b, x, cfg.linear), x, importance)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
        opt.step()
        if log_now:
            logs.append(losses.detach().double().numpy().copy())
            logged.append(step)
    return TrainResult(
        W=W.detach().double().numpy().copy(),
        b=b.detach().double().numpy().copy(),
        loss_history=np.stack(logs),
        logged_steps=np.asarray(logged),
        backend="torch",
    )


def eval_losses(cfg: TMSConfig, W: np.ndarray, b: np.ndarray, n_examples: int | None = None,
                seed: int = 1_000_003) -> np.ndarray:
    """Held-out per-instance loss on one fixed batch (float64). W [L, n, m], b [L, n] -> [L].

    The batch comes from its own generator (``seed``), so every model of a config is scored on the same data.
    By default it holds 32 768 examples per instance, capped at about 4M entries in all (large grids get fewer).
    """
    import dataclasses

    if n_examples is None:
        n_examples = int(min(32_768, max(1024, 2**22 // (cfg.L * cfg.n))))
    big = dataclasses.replace(cfg, batch=n_examples)
    x = sample_batch(big, torch.tensor(cfg.feature_prob, dtype=torch.float32), make_generator(seed)).double()
    importance = torch.tensor(cfg.importance_rows(), dtype=torch.float64)
    with torch.no_grad():
        out = forward(torch.as_tensor(W, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), x, cfg.linear)
        return instance_losses(out, x, importance).numpy()
