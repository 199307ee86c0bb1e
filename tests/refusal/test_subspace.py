"""Rank-k subspace ablation (issue 15): the basis, the hooks, the weight edit and the growth stage."""

import copy
import json

import pytest
import torch

from alignlab.cli import main
from alignlab.errors import AlignlabError
from alignlab.models.anatomy import map_model
from alignlab.models.hooks import hook_context
from alignlab.models.tiny import tiny_model
from alignlab.refusal.config import EditConfig, SubspaceConfig
from alignlab.refusal.edit import orthogonalize_subspace, project_out_columns
from alignlab.refusal.intervene import ablate, ablate_subspace, orthonormal_basis
from alignlab.refusal.intervention import Intervention
from alignlab.refusal.subspace import pick_step
from alignlab.refusal.weights import LayerWeights

SMALL = ["--n-train", "6", "--n-val", "4", "--n-test-harmful", "3", "--n-test-harmless", "3",
         "--eval-max-new-tokens", "6", "--eval-allow-short", "--kl-max", "100", "--induce-min=-1e9",
         "--screen-n", "2", "--full-k", "3", "--batch-size", "8", "--device", "cpu", "--no-export"]


def _dirs(k: int, d: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(k, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_orthonormal_basis_is_gram_schmidt_in_order():
    v = _dirs(3)
    q = orthonormal_basis(v, 64)
    torch.testing.assert_close(q @ q.T, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(q[0], v[0] / v[0].norm())  # the first direction is kept as it is
    # same span: each original row is reproduced by its projection onto the basis
    torch.testing.assert_close((v @ q.T) @ q, v, atol=1e-10, rtol=0)
    with pytest.raises(AlignlabError, match="span of the ones before"):
        orthonormal_basis(torch.stack([v[0], v[1], 2 * v[0] - v[1]]), 64)
    with pytest.raises(AlignlabError, match=r"shape \[k, 64\]"):
        orthonormal_basis(v[:, :10], 64)
    with pytest.raises(AlignlabError, match="NaN"):
        orthonormal_basis(torch.full((2, 64), float("nan")), 64)


def test_subspace_hooks_remove_every_direction_and_equal_nested_rank1_ablations():
    model, _ = tiny_model("llama")
    anatomy = map_model(model)
    v = _dirs(3).float()
    q = orthonormal_basis(v, 64).float()
    seen = []
    capture = [("block_out", lay, lambda x, layer: seen.append(x.float() @ q.T)) for lay in range(anatomy.n_layers)]
    ids = torch.randint(5, 290, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with ablate_subspace(model, v), hook_context(model, capture, anatomy):
            sub = model(input_ids=ids).logits
        # projectors onto orthogonal unit vectors commute: three rank-1 ablations are the rank-3 one
        with ablate(model, q[0]), ablate(model, q[1]), ablate(model, q[2]):
            nested = model(input_ids=ids).logits
        plain = model(input_ids=ids).logits
    assert max(float(s.abs().max()) for s in seen) < 1e-4  # no block leaves any span component behind
    torch.testing.assert_close(sub, nested, atol=1e-4, rtol=0)
    assert float((sub - plain).abs().max()) > 1e-3  # the ablation did something


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_subspace_edit_equals_subspace_hooks(family):
    model, _ = tiny_model(family)
    anatomy = map_model(model)
    v = _dirs(3, anatomy.d_model, seed=4).float()
    ids = torch.randint(5, 290, (2, 9), generator=torch.Generator().manual_seed(2))
    edited = copy.deepcopy(model)
    rep = orthogonalize_subspace(edited, v)
    with torch.no_grad(), ablate_subspace(model, v):
        hooked = model(input_ids=ids).logits
    with torch.no_grad():
        baked = edited(input_ids=ids).logits
    assert rep.exact is True and rep.writers_edited == len(anatomy.writers())
    assert any("rank-3" in n for n in rep.notes)
    torch.testing.assert_close(baked, hooked, atol=1e-4, rtol=0)


def test_subspace_edit_is_w_minus_q_qt_w_on_a_writer():
    model, _ = tiny_model("llama")
    anatomy = map_model(model)
    v = _dirs(2, anatomy.d_model, seed=5).float()
    q = orthonormal_basis(v, anatomy.d_model).float()
    writer = anatomy.writers()[0]
    W = model.get_submodule(writer.name).weight.detach().clone()  # [d, in]
    orthogonalize_subspace(model, v)
    torch.testing.assert_close(model.get_submodule(writer.name).weight, W - q.T @ (q @ W), atol=1e-5, rtol=0)
    # and the same as two rank-1 projections in a row
    torch.testing.assert_close(project_out_columns(project_out_columns(W, q[0]), q[1]), W - q.T @ (q @ W),
                               atol=1e-5, rtol=0)


def test_subspace_edit_refuses_norm_preserving_variants():
    model, _ = tiny_model("llama")
    with pytest.raises(AlignlabError, match="plain projection"):
        orthogonalize_subspace(model, _dirs(2).float(), EditConfig(norm_preserve="columns"))


def test_intervention_with_extra_directions():
    model, _ = tiny_model("llama")
    v = _dirs(3, seed=6)
    iv = Intervention("rd", v[0], 1, -1, extra=v[1:])
    assert iv.rank == 3 and iv.describe()["rank"] == 3
    torch.testing.assert_close(iv.directions(), v)
    ids = torch.randint(5, 290, (1, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), iv.ablate(model):
        hooked = model(input_ids=ids).logits
    with torch.no_grad(), ablate_subspace(model, v.float()):
        direct = model(input_ids=ids).logits
    torch.testing.assert_close(hooked, direct)
    with pytest.raises(AlignlabError, match="ablated fully"):
        Intervention("search", v[0], 1, -1, weights=LayerWeights.full(2), extra=v[1:])


def test_pick_step_rules():
    start = {"refusal": 0.4}
    steps = [{"rank": 1, "refusal": 0.4}, {"rank": 2, "refusal": 0.08}, {"rank": 3, "refusal": 0.0}]
    assert pick_step(steps, start, SubspaceConfig(rank=0, target=0.1)) == 2  # first at or under the target
    assert pick_step(steps, start, SubspaceConfig(rank=3)) == 3  # explicit rank: the last step reached
    missed = [{"rank": 1, "refusal": 0.4}, {"rank": 2, "refusal": 0.2}, {"rank": 3, "refusal": 0.2}]
    assert pick_step(missed, start, SubspaceConfig(rank=0, target=0.1)) == 2  # lowest, ties to the lower rank
    worse = [{"rank": 1, "refusal": 0.5}, {"rank": 2, "refusal": 0.4}]
    assert pick_step(worse, start, SubspaceConfig(rank=0, target=0.1)) == 0  # no better than the pick: keep it
    assert pick_step([], start, SubspaceConfig(rank=0)) == 0
    with pytest.raises(AlignlabError, match="subspace-target"):
        SubspaceConfig(target=1.5)
    with pytest.raises(AlignlabError, match="subspace-rank"):
        SubspaceConfig(rank=-1)


class _FakeScorer:
    """Refusal score = minus the squared weight of the hidden 'refusal' plane inside the span (0..2); KL = 0.1 per
    member; confirmation: refused in proportion to the plane's uncovered part (read from the ablated span)."""

    def __init__(self, plane: torch.Tensor):
        self.model, _ = tiny_model("llama")
        self.anatomy, self.plane, self.calls = map_model(self.model), plane, []

    def covered(self, directions):
        q = orthonormal_basis(directions.double(), directions.shape[1])
        return float(((self.plane @ q.T) ** 2).sum())

    def score(self, directions, which="full"):
        self.calls.append(which)
        return -self.covered(directions), 0.1 * directions.shape[0]

    def confirm(self, context, tokens):
        refused = round(10 * (2 - self.covered(context)) / 2)
        return {"refused": refused, "n": 10, "refusal": refused / 10, "degenerate": 0.0}


def test_greedy_growth_from_nothing_finds_the_hidden_plane(monkeypatch):
    import alignlab.refusal.intervene as intervene
    from alignlab.refusal.subspace import grow

    monkeypatch.setattr(intervene, "ablate_subspace", lambda model, directions, anatomy=None: directions)
    d = 64
    e = torch.eye(d, dtype=torch.float64)
    r = 0.01 * torch.randn(2, 4, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r[1, 2], r[1, 1], r[0, 3] = e[3], e[7], 0.8 * e[7] + 0.6 * e[20]  # the plane's two axes and a decoy
    scorer = _FakeScorer(e[[3, 7]])
    cfg = SubspaceConfig(rank=0, max_rank=4, target=0.1, kl_max=1.0, screen_n=2, full_k=2)
    steps = grow(scorer, r, None, cfg, {"refused": 10, "n": 10, "refusal": 1.0, "degenerate": 0.0})
    # both axes cover the plane equally alone: the tie goes to the first in (position, layer) order
    assert [s["added"] for s in steps] == [{"position": -1, "layer": 1}, {"position": -1, "layer": 2}]
    assert [s["refused"] for s in steps] == [5, 0] and steps[-1]["rank"] == 2  # auto stops at the target
    # step 1 screens all 8 candidates, step 2 the 7 outside the span; each rescores its best full_k = 2
    assert scorer.calls.count("screen") == 15 and scorer.calls.count("full") == 4
    # the KL bound stops growth: a third member would cost KL 0.3 > 0.25
    capped = grow(_FakeScorer(e[[3, 7]]), r, None, SubspaceConfig(rank=3, kl_max=0.25, screen_n=2, full_k=2),
                  {"refused": 10, "n": 10, "refusal": 1.0, "degenerate": 0.0})
    assert [s["rank"] for s in capped] == [1, 2]
    # seeded with the first axis: one step adds the second
    seeded = grow(_FakeScorer(e[[3, 7]]), r, e[7], cfg, {"refused": 5, "n": 10, "refusal": 0.5, "degenerate": 0.0})
    assert [s["added"] for s in seeded] == [None, {"position": -1, "layer": 2}]


def _ablate_cli(tiny_dir, path) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["refusal", "ablate", str(tiny_dir), "--direction", str(path), "--prompt", "hi", "--device", "cpu",
                     "--max-new-tokens", "5"]) == 0
    return buf.getvalue()


def _run(tiny_dir, out, *extra):
    assert main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL, *extra]) == 0
    return json.loads((out / "report.json").read_text())


def test_rank3_run_end_to_end_is_exact_deterministic_and_resumes(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    args = ("--subspace-rank", "3", "--subspace-kl-max", "100")
    report = _run(tiny_dir, tmp_path / "a", *args)
    sel = report["selected"]
    assert sel["rank"] == 3 and sel["subspace_rank"] == 3 and len(sel["subspace_members"]) == 2
    assert report["exact_equivalence"] is True and report["edit_max_abs_logit_diff"] < 1e-3
    steps = json.loads((tmp_path / "a" / "subspace.json").read_text())["steps"]
    assert [s["rank"] for s in steps] == [1, 2, 3] and steps[0]["added"] is None
    saved = load_file(str(tmp_path / "a" / "subspace.safetensors"))["directions"]
    direction = load_file(str(tmp_path / "a" / "direction.safetensors"))["direction"]
    assert saved.shape[0] == 3 and torch.equal(saved[0], direction.double())
    # the members are distinct candidates and none is the chosen one
    members = {(m["position"], m["layer"]) for m in sel["subspace_members"]}
    assert len(members) == 2 and (sel["position"], sel["layer"]) not in members
    md = (tmp_path / "a" / "report.md").read_text()
    assert "Grown to a rank-3 subspace" in md and "## Subspace growth" in md and "Picked rank 3." in md
    assert report["subspace"]["picked_rank"] == 3 and len(report["subspace"]["steps"]) == 3
    again = _run(tiny_dir, tmp_path / "b", *args)  # a fresh directory: the same growth
    assert again["selected"]["subspace_members"] == sel["subspace_members"]
    resumed = _run(tiny_dir, tmp_path / "a", *args)
    assert "subspace" in resumed["reused_stages"] and resumed["selected"] == sel
    # `refusal ablate` takes the subspace file: same reply as the hooks of the Python API
    from alignlab.models import load_model
    from alignlab.models.chat import chat_format
    from alignlab.models.generate import generate_greedy

    capsys_text = _ablate_cli(tiny_dir, tmp_path / "a" / "subspace.safetensors")
    lm = load_model(str(tiny_dir), device="cpu")
    with ablate_subspace(lm.model, saved.float()):
        expected = generate_greedy(lm.model, chat_format(lm.tokenizer), ["hi"], 5, 1, progress=False)[0].text
    assert capsys_text.strip() == expected.strip()
    one = _run(tiny_dir, tmp_path / "a", "--subspace-rank", "1")  # rank 1: the plain RD pick, nothing grown
    assert one["selected"]["rank"] == 1 and "subspace_rank" not in one["selected"]


def test_lora_export_refuses_a_subspace(tiny_dir, tmp_path, capsys):
    out = tmp_path / "lora"
    args = ["refusal", "run", str(tiny_dir), "--out", str(out), *[a for a in SMALL if a != "--no-export"],
            "--export-lora", "--subspace-rank", "2"]
    assert main(args) == 2  # before any stage runs
    assert "rank-1 adapter" in capsys.readouterr().err and not (out / "prompts.json").exists()
    chosen = Intervention("rd", _dirs(2)[0], 1, -1, extra=_dirs(2)[1:])
    from alignlab.refusal.export_lora import prepare_run_adapter

    with pytest.raises(AlignlabError, match="rank-1 adapter"):
        prepare_run_adapter(None, chosen, {}, None)
