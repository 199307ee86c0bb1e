"""L_p stability runs of the study (issue 17 item 4): traces, non-finite step counts, matched lambda."""

from __future__ import annotations

import math

import torch

from alignlab.sae.buffer import TensorBatches
from alignlab.sae.study_stability import StabilityRun, _lp_sae, matched_lambda, run_stability

D, N, STEPS = 8, 24, 12


def _data(rows: int = 512, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(rows, D, generator=g)) * torch.rand(rows, 1, generator=g)


class _PoisonedBatches:
    """TensorBatches whose batch ``at`` holds an inf row (a non-finite step)."""

    def __init__(self, at: int) -> None:
        self.inner, self.at = TensorBatches(_data(), 32, STEPS), at

    def __iter__(self):
        for i, x in enumerate(self.inner):
            if i == self.at:
                x = x.clone()
                x[0, 0] = math.inf
            yield x


def test_traces_have_one_value_per_step_and_count_no_bad_steps_on_clean_data():
    held = _data(64, seed=1)
    for p, eps in ((1.0, 0.0), (0.5, 0.0), (0.2, 1e-3)):
        rec = run_stability(
            StabilityRun(p, eps), TensorBatches(_data(), 32, STEPS), D, N, STEPS, 0.05, 3e-3, 0, held
        )
        assert rec["nonfinite_steps"] == 0 and rec["steps"] == STEPS
        assert len(rec["loss_trace"]) == len(rec["grad_norm_trace"]) == STEPS
        assert all(v is not None and v > 0 for v in rec["grad_norm_trace"])
        assert rec["name"] == StabilityRun(p, eps).name and 0 <= rec["died"] <= rec["alive_early"] <= N
        assert math.isfinite(rec["heldout"]["fvu"])


def test_a_non_finite_step_is_counted_skipped_and_leaves_the_weights_finite():
    rec = run_stability(
        StabilityRun(0.5, 0.0), _PoisonedBatches(at=4), D, N, STEPS, 0.05, 3e-3, 0, _data(64, seed=1)
    )
    assert rec["nonfinite_steps"] == 1
    assert rec["loss_trace"][4] is None and rec["grad_norm_trace"][4] is None
    assert sum(v is None for v in rec["loss_trace"]) == 1
    assert math.isfinite(rec["heldout"]["fvu"])  # the skipped step did not poison the weights


def test_matched_lambda_equalises_the_penalty_at_initialisation():
    x = _data(64)
    sae = _lp_sae(D, N, 0.5, 0.0, 1.0, seed=0)
    lam = matched_lambda(sae, x, 0.1, 0.5, 0.0)
    with torch.no_grad():
        f = sae.encode(x).double()
    assert math.isclose(lam * float(f[f > 0].pow(0.5).sum()), 0.1 * float(f.sum()), rel_tol=1e-6)
    lam_eps = matched_lambda(sae, x, 0.1, 0.5, 1e-3)
    assert math.isclose(
        lam_eps * float(((f + 1e-3).pow(0.5) - 1e-3**0.5).sum()), 0.1 * float(f.sum()), rel_tol=1e-6
    )
