import math

import pytest

from alignlab.errors import AlignlabError
from alignlab.refusal.config import SelectConfig
from alignlab.refusal.select import Candidate, filter_candidates, pick


def _c(pos, layer, bypass, induce, kl):
    return Candidate(pos, layer, bypass=bypass, induce=induce, kl=kl, stage="full")


def test_filters_and_argmin():
    cands = [
        _c(-1, 3, -9.0, 2.0, 0.5),   # best bypass but kl too high
        _c(-1, 4, -8.0, -1.0, 0.05),  # induce <= 0
        _c(-2, 5, -7.0, 1.0, 0.05),  # survivor
        _c(-1, 6, -6.0, 3.0, 0.01),  # survivor, worse bypass
        _c(-3, 2, math.nan, 1.0, 0.01),  # non-finite
    ]
    survivors, relaxed = filter_candidates(cands, SelectConfig())
    assert [(c.layer) for c in survivors] == [5, 6] and not relaxed
    assert pick(survivors).layer == 5
    # thresholds are configurable
    survivors, _ = filter_candidates(cands, SelectConfig(kl_max=1.0))
    assert pick(survivors).layer == 3
    survivors, _ = filter_candidates(cands, SelectConfig(induce_min=-2.0))
    assert pick(survivors).layer == 4


def test_tie_breaks_lower_kl_then_lower_layer():
    a, b, c = _c(-1, 7, -5.0, 1.0, 0.05), _c(-1, 6, -5.0, 1.0, 0.02), _c(-2, 5, -5.0, 1.0, 0.02)
    assert pick([a, b, c]) is c
    assert pick([a, b]) is b


def test_no_survivor_raises_with_listing_or_relaxes():
    cands = [_c(-1, 1, -3.0, -1.0, 0.05), _c(-1, 2, -4.0, -2.0, 0.5)]
    with pytest.raises(AlignlabError, match="layer 2"):
        filter_candidates(cands, SelectConfig())
    survivors, relaxed = filter_candidates(cands, SelectConfig(on_empty="relax"))
    assert relaxed and [c.layer for c in survivors] == [1]


def test_pruning_fraction():
    cfg = SelectConfig()
    assert int(32 * (1 - cfg.prune_frac)) == 25  # L = 32 -> layers 25..31 pruned (spec §2.7)


def test_bad_config_is_one_line_error():
    with pytest.raises(AlignlabError):
        SelectConfig(prune_frac=1.5)
    with pytest.raises(AlignlabError):
        SelectConfig(kl_max=0)
