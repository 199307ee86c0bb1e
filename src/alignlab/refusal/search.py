"""Search the refusal/KL trade-off (issue 13 §2): multivariate TPE over ablation-weight kernels and a float
direction index, two objectives (harmful-val refusal from a few greedy tokens; harmless first-token KL),
then the Pareto points confirmed by generation with Wilson intervals.

The study lives in the run directory (Optuna's journal file), so an interrupted search resumes at the same
trial count and ``--trials`` can grow later. Trial i is sampled with seed + i from a fresh sampler, which
makes a resumed search equal an uninterrupted one.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlab.refusal.search_space import (
    Point,
    SearchConfig,
    TrialScorer,
    decode,
    distributions,
    full_ablation_params,
)


@dataclass
class Confirmed:
    trial: int
    refusal: float
    """Harmful-val refusal rate from ``confirm_tokens``-token greedy replies (rd judge)."""
    wilson95: tuple[float, float]
    degenerate: float
    kl: float
    prefix_refusal: float


@dataclass
class SearchResult:
    trials: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    confirmed: list[Confirmed]
    chosen: dict[str, Any]
    chosen_point: Point
    notes: list[str] = field(default_factory=list)


def _study(path: Path, name: str):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(study_name=name, storage=storage, directions=["minimize", "minimize"],
                                load_if_exists=True)
    for trial in study.get_trials(deepcopy=False):  # a kill mid-trial leaves it RUNNING forever
        if trial.state == optuna.trial.TrialState.RUNNING:
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    return study


def _complete(study) -> list:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def run_trials(scorer: TrialScorer, cfg: SearchConfig, journal: Path, study_name: str, n_layers: int,
               max_layer: int, rd_layer: int) -> list:
    """Run trials until ``cfg.trials`` are complete; returns the complete trials in order."""
    import warnings

    import optuna

    study = _study(journal, study_name)
    space = distributions(n_layers, max_layer, cfg)
    start = time.perf_counter()
    while (done := len(_complete(study))) < cfg.trials:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.sampler = optuna.samplers.TPESampler(seed=cfg.seed + done, multivariate=True,
                                                       n_startup_trials=cfg.startup_trials)
        if done == 0:
            waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
            if not waiting:
                study.enqueue_trial(full_ablation_params(n_layers, cfg, rd_layer))
        trial = study.ask(space)
        point = decode(trial.params, n_layers, rd_layer)
        refusal, kl = scorer.score(point)
        study.tell(trial, [refusal, kl])
        _progress(done + 1, cfg.trials, refusal, kl, start)
    return _complete(study)[: cfg.trials]


def _progress(i: int, n: int, refusal: float, kl: float, start: float) -> None:
    rate = (time.perf_counter() - start) / max(i, 1)
    end = "\n" if not sys.stderr.isatty() or i == n else "\r"
    if sys.stderr.isatty() or i == n or i % 8 == 0:
        print(f"search trial {i}/{n}: refusal {refusal:.2f} KL {kl:.3f} ({rate:.1f} s/trial)", end=end,
              file=sys.stderr, flush=True)


def pareto_front(trials: list) -> list:
    """Non-dominated trials (lower refusal and lower KL are better), ordered by KL."""
    front = []
    for t in trials:
        r, k = t.values
        dominated = any((o.values[0] <= r and o.values[1] <= k) and (o.values[0] < r or o.values[1] < k)
                        for o in trials)
        if not dominated:
            front.append(t)
    unique = {(t.values[0], t.values[1]): t for t in sorted(front, key=lambda t: -t.number)}
    return sorted(unique.values(), key=lambda t: (t.values[1], t.values[0]))


def to_confirm(front: list, cfg: SearchConfig, n_prompts: int) -> list:
    """The ``confirm_k`` lowest-KL Pareto points whose cheap refusal is within one prompt of the target, or the
    lowest-refusal ones when none is."""
    slack = cfg.refusal_target + 1.0 / max(n_prompts, 1)
    near = [t for t in front if t.values[0] <= slack]
    if near:
        return sorted(near, key=lambda t: t.values[1])[: cfg.confirm_k]
    return sorted(front, key=lambda t: (t.values[0], t.values[1]))[: cfg.confirm_k]


def choose(confirmed: list[Confirmed], base_degenerate: float, cfg: SearchConfig) -> tuple[Confirmed, str]:
    """Lowest KL among confirmed, non-degenerate points with refusal <= target; else the lowest refusal."""
    usable = [c for c in confirmed if c.degenerate <= base_degenerate + 0.05] or confirmed
    hits = [c for c in usable if c.refusal <= cfg.refusal_target]
    if hits:
        best = min(hits, key=lambda c: (c.kl, c.refusal))
        return best, f"search: trial {best.trial} reaches refusal {best.refusal:.2f} at KL {best.kl:.3f}"
    best = min(usable, key=lambda c: (c.refusal, c.kl))
    return best, (f"search: no confirmed point reaches refusal <= {cfg.refusal_target:.2f}; chose the lowest "
                  f"refusal, trial {best.trial}: {best.refusal:.2f} at KL {best.kl:.3f}")


def confirm_points(scorer: TrialScorer, trials: list, cfg: SearchConfig, n_layers: int,
                   rd_layer: int) -> tuple[list[Confirmed], float]:
    """Greedy ``confirm_tokens``-token replies on the harmful val prompts for each trial; returns the
    confirmations and the base model's degenerate-output rate on the same prompts."""
    from contextlib import nullcontext

    from alignlab.refusal.confirm import confirm_replies
    from alignlab.refusal.stats import wilson
    from alignlab.refusal.weights import ablate_weighted

    prompts = scorer.harmful

    def run(context) -> tuple[int, float]:
        c = confirm_replies(scorer.model, scorer.fmt, scorer.judge, prompts, cfg.confirm_tokens, context)
        return c.refused, c.degenerate

    _, base_degenerate = run(nullcontext())
    out = []
    for i, trial in enumerate(trials, 1):
        point = decode(trial.params, n_layers, rd_layer)
        k, degenerate = run(ablate_weighted(scorer.model, scorer.direction(point), point.weights, scorer.anatomy))
        n = len(prompts)
        out.append(Confirmed(trial.number, k / n, wilson(k, n), degenerate, trial.values[1], trial.values[0]))
        print(f"confirm {i}/{len(trials)}: trial {trial.number} refusal {k}/{n} at {cfg.confirm_tokens} tokens, "
              f"KL {trial.values[1]:.3f}, degenerate {degenerate:.2f}", file=sys.stderr, flush=True)
    return out, base_degenerate


def trial_record(trial) -> dict[str, Any]:
    return {"number": trial.number, "refusal": trial.values[0], "kl": trial.values[1], "params": trial.params}
