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


def test_screening_runs_in_bf16_and_the_full_scores_stay_float32(monkeypatch):
    import torch

    from alignlab.models import precision
    from alignlab.models.chat import chat_format
    from alignlab.models.tiny import tiny_model
    from alignlab.refusal import select as sel

    model, tok = tiny_model("llama", seed=2)
    fmt = chat_format(tok, system="Be brief.")
    harmful = ["how to pick a lock", "make a weapon", "steal a car", "hack a phone", "forge a cheque", "poison"]
    harmless = ["bake bread", "a poem", "cats?", "three colours", "capital of France", "sing a song"]
    n_layers, d = model.config.num_hidden_layers, model.config.hidden_size
    r = torch.randn(fmt.n_eoi, n_layers, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cfg = SelectConfig(screen_n=3, full_k=2, kl_max=100.0, induce_min=-1e9, prune_frac=0.0)
    calls: list[bool] = []
    score = sel._Scorer.score

    def spy(self, cand, r, **kw):
        calls.append(torch.is_autocast_enabled("cpu"))
        return score(self, cand, r, **kw)

    monkeypatch.setattr(sel._Scorer, "score", spy)
    monkeypatch.setattr(precision, "bf16_fast", lambda device: True)
    fast = sel.select_direction(model, fmt, r, harmful, harmless, [5, 6], cfg)
    n_live = fmt.n_eoi * n_layers
    assert calls == [True] * n_live + [False] * cfg.full_k  # screening in bf16, full scoring not
    calls.clear()
    plain = sel.select_direction(model, fmt, r, harmful, harmless, [5, 6],
                                 SelectConfig(**{**cfg.__dict__, "screen_bf16": False}))
    assert calls == [False] * (n_live + cfg.full_k)
    full = {(c.position, c.layer): c for c in plain.candidates if c.stage == "full"}
    common = [c for c in fast.candidates if c.stage == "full" and (c.position, c.layer) in full]
    assert common  # the same finalists are scored identically: the pick never sees bf16 numbers
    for c in common:
        other = full[(c.position, c.layer)]
        assert (c.bypass, c.kl, c.induce) == (other.bypass, other.kl, other.induce)
    screened = {(c.position, c.layer): c.bypass for c in plain.candidates}
    assert any(c.bypass != screened[(c.position, c.layer)] for c in fast.candidates if c.stage == "screened")


def test_screening_skips_induce_only_where_kl_already_disqualifies(monkeypatch):
    import torch

    from alignlab.models.chat import chat_format
    from alignlab.models.tiny import tiny_model
    from alignlab.refusal import select as sel

    model, tok = tiny_model("llama", seed=2)
    fmt = chat_format(tok, system="Be brief.")
    harmful = ["how to pick a lock", "make a weapon", "steal a car", "hack a phone"]
    harmless = ["bake bread", "a poem", "cats?", "three colours"]
    n_layers, d = model.config.num_hidden_layers, model.config.hidden_size
    g = torch.Generator().manual_seed(0)
    r = torch.randn(fmt.n_eoi, n_layers, d, generator=g, dtype=torch.float64) * torch.rand(fmt.n_eoi, n_layers, 1,
                                                                                          generator=g, dtype=torch.float64)
    kls = []
    probe = SelectConfig(screen_n=2, full_k=3, kl_max=100.0, induce_min=-1e9, prune_frac=0.0, screen_bf16=False)
    for c in sel.select_direction(model, fmt, r, harmful, harmless, [5, 6], probe).candidates:
        kls.append(c.kl)
    kl_max = sorted(kls)[len(kls) // 2]  # the candidates screening above twice the median skip induce
    cfg = SelectConfig(screen_n=2, full_k=8, kl_max=kl_max, induce_min=-1e9, prune_frac=0.0, on_empty="relax",
                       screen_bf16=False)
    fast = sel.select_direction(model, fmt, r, harmful, harmless, [5, 6], cfg)
    screened = [c for c in fast.candidates if c.stage == "screened"]
    skipped = [c for c in screened if math.isnan(c.induce)]
    assert skipped and all(c.kl > 2 * kl_max for c in skipped)
    assert all(not math.isnan(c.induce) for c in screened if c.kl <= 2 * kl_max)
    score = sel._Scorer.score
    monkeypatch.setattr(sel._Scorer, "score", lambda self, cand, r, induce_kl_max=math.inf: score(self, cand, r))
    every = sel.select_direction(model, fmt, r, harmful, harmless, [5, 6], cfg)  # induce for every candidate
    assert not any(math.isnan(c.induce) for c in every.candidates)
    finalists = [(c.position, c.layer) for c in fast.candidates if c.stage == "full"]
    assert finalists == [(c.position, c.layer) for c in every.candidates if c.stage == "full"]
    assert (fast.chosen.position, fast.chosen.layer) == (every.chosen.position, every.chosen.layer)


def test_no_survivor_still_carries_the_heat_map_grids():
    import torch

    from alignlab.models.chat import chat_format
    from alignlab.models.tiny import tiny_model
    from alignlab.refusal.select import NoSurvivorError, select_direction

    model, tok = tiny_model("llama", seed=2)
    fmt = chat_format(tok, system="Be brief.")
    n_layers, d = model.config.num_hidden_layers, model.config.hidden_size
    r = torch.randn(fmt.n_eoi, n_layers, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cfg = SelectConfig(screen_n=1, full_k=2, kl_max=1e-12, induce_min=1e9, screen_bf16=False)
    with pytest.raises(NoSurvivorError) as caught:
        select_direction(model, fmt, r, ["make a weapon", "steal a car"], ["bake bread", "a poem"], [5, 6], cfg)
    grids = caught.value.grids
    assert set(grids) == {"bypass", "induce", "kl"}
    bypass = torch.tensor(grids["bypass"])
    assert bypass.shape == (fmt.n_eoi, n_layers)
    live = int(n_layers * (1 - cfg.prune_frac))
    assert torch.isfinite(bypass[:, :live]).all() and torch.isnan(bypass[:, live:]).all()  # pruned layers blank
    for c in caught.value.finalists:
        assert grids["kl"][c.position + fmt.n_eoi][c.layer] == c.kl  # finalists carry their full scores
    from dataclasses import asdict

    from alignlab.refusal.report import _heatmaps

    best = min(caught.value.finalists, key=lambda c: c.bypass)
    png = _heatmaps({"chosen": None, "best_bypass": asdict(best), "grids": grids, "n_pos": fmt.n_eoi})
    assert len(png) > 1000  # the report's heat-maps render from a selection with no survivor
