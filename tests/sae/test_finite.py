import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.sae.finite import FiniteGuard


def test_eager_guard_raises_at_the_failing_step():
    g = FiniteGuard(torch.device("cpu"), "bad at step {step}")
    g.check(torch.tensor(True), 0)
    with pytest.raises(AlignlabError, match="bad at step 3"):
        g.check(torch.isfinite(torch.tensor(float("nan"))), 3)


def test_deferred_guard_records_the_first_failing_step_and_raises_later():
    g = FiniteGuard(torch.device("cpu"), "bad at step {step}", deferred=True)
    g.check(torch.tensor(True), 0)
    g.raise_pending()  # nothing pending
    g.check(torch.tensor(False), 5)  # no exception yet: no device sync
    g.check(torch.tensor(False), 7)
    g.check(torch.tensor(True), 8)
    with pytest.raises(AlignlabError, match="bad at step 5"):
        g.raise_pending()


def test_accelerator_devices_defer_by_default():
    assert FiniteGuard(torch.device("meta"), "x").first_bad is not None
    assert FiniteGuard(torch.device("cpu"), "x").first_bad is None
