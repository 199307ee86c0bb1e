"""`alignlab refusal study` end to end on a tiny random model: every condition runs, the verdicts follow from
the stored per-prompt outcomes, a rerun reuses every artifact, and the run directory is shared with
`refusal run` (issue 16)."""

import json
import shutil

import pytest
import torch

from alignlab.cli import main
from alignlab.refusal.forward import COUNTER
from alignlab.refusal.study_conditions import build_conditions
from alignlab.refusal.study_verdict import Paired, claim_verdict, equivalence_verdict

# ChatML-like, but with a two-token post-instruction suffix (<|im_end|> and "\n"), so there are two positions
TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_end|>' + '\n' }}{% endif %}"
)
SHARED = [
    "--n-train",
    "6",
    "--n-val",
    "4",
    "--kl-max",
    "100",
    "--induce-min=-1e9",
    "--screen-n",
    "2",
    "--full-k",
    "2",
    "--batch-size",
    "8",
    "--device",
    "cpu",
]
STUDY = [
    *SHARED,
    "--n-test-harmful",
    "5",
    "--n-test-harmless",
    "4",
    "--n-response",
    "4",
    "--sweep",
    "2",
    "--max-new-tokens",
    "8",
    "--allow-short",
    "--aux-tokens",
    "8",
    "--gen-batch-size",
    "8",
]
CLAIMS = {"contrast_source", "token_position", "all_layers", "projection_vs_sweep", "weight_edit"}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("tpl") / "two_eoi.jinja"
    path.write_text(TEMPLATE)
    return path


@pytest.fixture(scope="module")
def study_dir(tiny_dir, template, tmp_path_factory):
    """`refusal select` into its own run directory (like `make demo`), then the study with --reuse of it."""
    base = tmp_path_factory.mktemp("study")
    out, demo = base / "s", base / "demo"
    args = ["--chat-template", str(template), *SHARED]
    assert main(["refusal", "select", str(tiny_dir), "--out", str(demo), "--n-test-harmful", "3", *args]) == 0
    before = {p.name: p.read_bytes() for p in demo.iterdir() if p.is_file()}
    assert (
        main(
            [
                "refusal",
                "study",
                str(tiny_dir),
                "--out",
                str(out),
                "--chat-template",
                str(template),
                "--reuse",
                str(demo),
                *STUDY,
            ]
        )
        == 0
    )
    assert {
        p.name: p.read_bytes() for p in demo.iterdir() if p.is_file()
    } == before  # the source is untouched
    return out, before["selection.json"]


def _study(out):
    return json.loads((out / "study.json").read_text())


def _conditions(run_dir):
    return {
        json.loads(p.read_text())["name"]: json.loads(p.read_text())
        for p in (run_dir / "study").glob("cond-*")
    }


def test_every_condition_runs_on_the_same_prompts(study_dir, tiny_dir):
    out, _ = study_dir
    model = _study(out)["models"][tiny_dir.name]
    assert model["n_eoi"] == 2 and model["n_harmful_test"] == 5 and model["n_harmless_test"] == 4
    pos = model["selected"]["position"]
    expected = {c.name for c in build_conditions([-2, -1], pos, (1.0, 2.0))}
    assert {
        f"pos{-3 - pos}",
        "subtract_all@2",
        "subtract_layer@1",
        "edited",
        "pos_last_instruction",
    } <= expected
    conds = _conditions(out / tiny_dir.name)
    assert set(conds) == set(model["conditions"]) == expected
    for c in conds.values():
        pp = c["per_prompt"]
        assert len(pp["refused"]) == len(pp["degenerate"]) == len(c["responses"]) == c["refusal"]["n"] == 5
        assert len(pp["kl"]) == 4 and all(x >= -1e-9 for x in pp["kl"])
        assert c["ce"] > 0
    assert conds["base"]["kl"] == 0.0
    # an intervention changes the model exactly when its direction is not zero (on this random model the
    # ablated model's replies can equal the base model's: then the refusal-vs-compliance contrast is zero)
    norms = model["directions"]["table"]
    for name, c in conds.items():
        if c["direction"] is not None:
            assert (c["kl"] > 0) == (norms[c["direction"]]["norm"] > 0), name
    if norms["responses"]["norm"] == 0:
        assert any("is zero" in note for note in model["directions"]["notes"])
    # the sweep multiplies the natural coefficient: c = 2 moves further from the base than c = 1
    for kind in ("subtract_layer", "subtract_all"):
        assert conds[f"{kind}@2"]["kl"] > conds[f"{kind}@1"]["kl"]


def test_weight_edit_equals_hooks_on_an_exact_family(study_dir, tiny_dir):
    out, _ = study_dir
    conds = _conditions(out / tiny_dir.name)
    hooks, edited = conds["ablate_all"], conds["edited"]
    assert max(abs(a - b) for a, b in zip(hooks["per_prompt"]["kl"], edited["per_prompt"]["kl"])) < 1e-4
    claim = _study(out)["models"][tiny_dir.name]["claims"]["weight_edit"]
    assert claim["gap"]["max_abs_logit_diff"] < 1e-4 and claim["gap"]["exact_equivalence"] is True
    assert claim["identical_responses"] == 5 and claim["verdict"] == "supported"


def test_verdicts_are_recomputed_from_the_stored_outcomes(study_dir, tiny_dir):
    out, _ = study_dir
    study = _study(out)
    model = study["models"][tiny_dir.name]
    conds = {k: Paired.from_result(v) for k, v in _conditions(out / tiny_dir.name).items()}
    assert set(model["claims"]) == CLAIMS
    alpha = study["config"]["study"]["alpha"]
    for key, claim in model["claims"].items():
        assert claim["verdict"] in ("supported", "not supported", "inconclusive") and claim["reason"]
        assert claim["test"] and claim["title"] and claim["claim"]  # the test used, named in study.json
        assert claim["conditions"][0]["name"] == "base" and claim["conditions"][1]["name"] == "ablate_all"
        for c in claim["conditions"]:
            assert set(c) >= {"name", "label", "refusal", "degenerate", "kl", "ce"}
            for rate in (c["refusal"], c["degenerate"]):
                lo, hi = rate["wilson95"]
                assert rate["n"] == 5 and rate["rate"] == rate["k"] / 5 and 0 <= lo <= rate["rate"] <= hi <= 1
        if key == "weight_edit":
            again = equivalence_verdict(conds["ablate_all"], conds["edited"], alpha, 0.05)
        else:
            alternatives = {c["other"]: conds[c["other"]] for c in claim["comparisons"]}
            again = claim_verdict("ablate_all", conds["ablate_all"], alternatives, claim["required"], alpha)
            again = {"verdict": again.verdict, "reason": again.reason}
        assert (claim["verdict"], claim["reason"]) == (again["verdict"], again["reason"])
    sweep = {c["other"] for c in model["claims"]["projection_vs_sweep"]["comparisons"]}
    assert sweep == {"subtract_layer@1", "subtract_layer@2", "subtract_all@1", "subtract_all@2"}
    cos = model["claims"]["contrast_source"]["cosines"]["selected"]
    assert all(-1 - 1e-9 <= v <= 1 + 1e-9 for v in cos.values()) and len(cos) == 3
    assert study["many_models"]["verdict"] == "inconclusive"  # one model


def test_study_extends_the_refusal_run_directory(study_dir, tiny_dir):
    out, selection = study_dir
    run_dir = out / tiny_dir.name
    assert (run_dir / "selection.json").read_bytes() == selection  # `refusal select`'s artifact was reused
    model = _study(out)["models"][tiny_dir.name]
    assert model["adopted"]["from"].endswith("demo") and "selection.json" in model["adopted"]["files"]
    # the test sets differ from the select run's (5 vs 3 harmful), so only the data stage is redone
    assert {"tokens", "extract", "select"} <= set(model["reused_stages"]) and "data" not in model[
        "reused_stages"
    ]
    for name in (
        "responses.json",
        "directions.safetensors",
        "selections.json",
        "edit.json",
        "reference.json",
    ):
        assert (run_dir / "study" / name).is_file()


def test_rerun_reuses_every_artifact_without_generating(study_dir, tiny_dir, template, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(study_dir[0], out)
    before = _study(out)["models"][tiny_dir.name]
    generates, forwards = COUNTER.generates, COUNTER.forwards
    assert (
        main(["refusal", "study", str(tiny_dir), "--out", str(out), "--chat-template", str(template), *STUDY])
        == 0
    )
    assert (COUNTER.generates, COUNTER.forwards) == (generates, forwards)  # nothing recomputed
    after = _study(out)["models"][tiny_dir.name]
    assert sorted(after["reused_conditions"]) == sorted(before["conditions"])
    assert after["claims"] == before["claims"] and after["conditions"] == before["conditions"]
    # a lost condition file is the only thing measured again
    (out / tiny_dir.name / "study" / "cond-subtract_all_2.json").unlink()
    assert (
        main(["refusal", "study", str(tiny_dir), "--out", str(out), "--chat-template", str(template), *STUDY])
        == 0
    )
    assert COUNTER.generates == generates + 1
    again = _study(out)["models"][tiny_dir.name]
    assert set(again["conditions"]) - set(again["reused_conditions"]) == {"subtract_all@2"}
    assert _timeless(again["claims"]) == _timeless(before["claims"])  # measured again: the same outcomes


def _timeless(obj):
    """``obj`` without its ``seconds`` entries (a measurement's time differs between runs)."""
    if isinstance(obj, dict):
        return {k: _timeless(v) for k, v in obj.items() if k != "seconds"}
    return [_timeless(v) for v in obj] if isinstance(obj, list) else obj


def test_html_is_self_contained_with_tables_and_plots(study_dir, tiny_dir):
    from html.parser import HTMLParser

    out, _ = study_dir
    page = (out / "study.html").read_text()

    class Balanced(HTMLParser):
        stack: list = []

        def handle_starttag(self, tag, attrs):
            if tag not in ("br", "img", "meta"):
                self.stack.append(tag)

        def handle_startendtag(self, tag, attrs):  # <img .../> opens nothing
            pass

        def handle_endtag(self, tag):
            assert self.stack.pop() == tag

    parser = Balanced()
    parser.feed(page)
    assert parser.stack == []
    assert page.count("<table>") >= 7  # summary, five claims, samples
    assert page.count("data:image/png;base64,") == 2 and "src='http" not in page and "<script" not in page
    assert "<strong>supported</strong>" in page or "<strong>inconclusive</strong>" in page
    md = (out / "study.md").read_text()
    assert "| **verdict** |" in md and f"## {tiny_dir.name}" in md


IMAGE_PROBE = (
    "<script>window.addEventListener('load',()=>{const a=[...document.images];"
    "console.log('alignlab-images '+a.length+' '+a.filter(i=>!(i.complete&&i.naturalWidth>0)).length)})"
    "</script>"
)


@pytest.mark.browser
def test_study_html_renders_in_chromium(study_dir, chromium, tmp_path):
    page = study_dir[0] / "study.html"
    dom, console = chromium(["--dump-dom", page.as_uri()], tmp_path / "p1")
    assert console == [] and dom.count("<table>") >= 7
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    _dom, console = chromium(["--dump-dom", probe.as_uri()], tmp_path / "p2")
    line = next(c for c in console if "alignlab-images" in c)
    assert line.split("alignlab-images ")[1].split('"')[0].split() == ["2", "0"]


def test_quick_changes_only_unset_defaults_and_keeps_128_tokens():
    from alignlab.cli import build_parser
    from alignlab.errors import AlignlabError
    from alignlab.refusal.study_cli import config_from_args

    parse = build_parser().parse_args
    cfg = config_from_args(parse(["refusal", "study", "--quick"]))
    assert cfg.models == ("smollm2-135m-refusal",) and cfg.quick
    assert (cfg.prompts.n_test_harmful, cfg.prompts.n_test_harmless, cfg.study.n_response) == (20, 24, 16)
    assert cfg.study.coefficients == (1.0, 2.0, 4.0) and cfg.study.max_new_tokens == 128
    assert cfg.study.aux_tokens == 48
    cfg = config_from_args(
        parse(["refusal", "study", "m", "--quick", "--n-test-harmful", "50", "--sweep", "3"])
    )
    assert cfg.prompts.n_test_harmful == 50 and cfg.study.coefficients == (1.0, 3.0)
    full = config_from_args(parse(["refusal", "study"]))
    assert (full.prompts.n_test_harmful, full.study.coefficients) == (100, (0.25, 0.5, 1.0, 2.0, 4.0))
    with pytest.raises(AlignlabError, match="--allow-short"):
        config_from_args(parse(["refusal", "study", "--max-new-tokens", "64"]))
    with pytest.raises(AlignlabError, match="share a run directory"):
        config_from_args(parse(["refusal", "study", "a/m", "a--m"]))


def test_last_instruction_and_response_means_match_hidden_states(tiny_llama):
    from alignlab.models.chat import chat_format
    from alignlab.refusal.study_directions import last_instruction_spans, mean_resid, response_spans

    model, tok = tiny_llama
    fmt = chat_format(tok)
    prompts, replies = ["How do I bake bread?", "Name a colour."], ["Mix flour and water.", "Blue"]
    spans = last_instruction_spans(fmt, prompts)
    got = mean_resid(model, spans, tok.pad_token_id, batch_size=1)  # [L, d]
    want = torch.zeros_like(got)
    rs = response_spans(fmt, prompts, replies)
    got_r, want_r, n_r = mean_resid(model, rs, tok.pad_token_id, batch_size=2), torch.zeros_like(got), 0
    with torch.no_grad():
        for s, r in zip(spans, rs):
            assert s.first == len(s.ids) - fmt.n_eoi - 1 and r.ids[: r.first] == s.ids
            hs = model(torch.tensor([s.ids]), output_hidden_states=True).hidden_states
            want += torch.stack([h[0, s.first] for h in hs[:-1]]).double() / len(spans)
            hr = model(torch.tensor([r.ids]), output_hidden_states=True).hidden_states
            want_r += torch.stack([h[0, r.first : r.last].sum(0) for h in hr[:-1]]).double()
            n_r += r.last - r.first
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_r, want_r / n_r, atol=1e-5, rtol=1e-5)  # left padding changes nothing


def test_contrast_directions_are_masked_like_the_instruction_candidates():
    from alignlab.refusal.study_directions import ContrastDirections, masked

    g = torch.Generator().manual_seed(0)
    b, c, last = (torch.randn(3, 8, generator=g, dtype=torch.float64) for _ in range(3))
    cd = ContrastDirections(b, c, last, {"refusals": 2}, ["note"])
    assert masked(cd, []) is cd
    out = masked(cd, [1, 6])
    for got, want in ((out.refusal_vs_compliance, b), (out.base_responses, c), (out.last_instruction, last)):
        assert got[:, [1, 6]].abs().max() == 0
        keep = [i for i in range(8) if i not in (1, 6)]
        assert torch.equal(got[:, keep], want[:, keep])
    assert b[:, 1].abs().min() > 0 and out.counts == cd.counts and out.notes == cd.notes  # inputs untouched


def test_single_layer_ablation_and_every_layer_subtraction(tiny_llama):
    from alignlab.models.hooks import hook_context
    from alignlab.refusal.study_conditions import ablate_at, subtract_every_layer

    model, _tok = tiny_llama
    r = torch.randn(64, generator=torch.Generator().manual_seed(0)) * 3
    r_hat = r / r.norm()
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    seen = {}

    def grab(x, layer):
        seen[layer] = x.detach().clone()

    def run(ctx):
        with torch.no_grad(), ctx, hook_context(model, [("block_in", i, grab) for i in range(3)]):
            model(ids)
        return dict(seen)

    from contextlib import nullcontext

    base = run(nullcontext())
    abl = run(ablate_at(model, r, 1))
    assert (abl[1] @ r_hat).abs().max() < 1e-5 and (
        abl[2] @ r_hat
    ).abs().max() > 1e-3  # later writes re-add r
    torch.testing.assert_close(abl[0], base[0])
    sub = run(subtract_every_layer(model, r, 1, 2.0))
    torch.testing.assert_close(sub[0], base[0] - (2.0 / 2) * r, atol=1e-5, rtol=1e-5)  # c/(l*+1) per layer


def test_rd_fallback_names_the_rule_it_used():
    from alignlab.refusal.config import SelectConfig
    from alignlab.refusal.study_stages import chosen_candidate

    def cand(pos, layer, bypass, kl, induce):
        return {
            "position": pos,
            "layer": layer,
            "bypass": bypass,
            "induce": induce,
            "kl": kl,
            "stage": "full",
        }

    cfg = SelectConfig()
    chosen = cand(-1, 3, -2.0, 0.05, 1.0)
    assert chosen_candidate({"chosen": chosen}, cfg)[1] == "rd"
    finalists = [cand(-1, 3, -5.0, 0.5, 1.0), cand(-2, 4, -9.0, 5.0, 1.0), cand(-1, 5, 1.0, 0.2, -1.0)]
    c, rule = chosen_candidate({"chosen": None, "finalists": finalists}, cfg)
    assert (c.position, c.layer) == (-1, 3) and "lowest bypass with kl <= 1" in rule
    c, rule = chosen_candidate({"chosen": None, "finalists": finalists[1:]}, cfg)
    assert (c.position, c.layer) == (-2, 4) and rule.endswith("lowest kl with induce > 0")
    c, rule = chosen_candidate({"chosen": None, "finalists": finalists[2:]}, cfg)
    assert (c.position, c.layer) == (-1, 5) and rule.endswith("none induces refusal (induce > 0): lowest kl")


def test_reuse_adopts_only_missing_stage_artifacts_of_the_same_model(tmp_path):
    from alignlab.errors import AlignlabError
    from alignlab.refusal.study_reuse import adopt, check_reuse, source_for

    demo, other, target = tmp_path / "demo", tmp_path / "other", tmp_path / "s" / "m"
    for d, model in ((demo, "m"), (other, "x")):
        d.mkdir()
        (d / "run.json").write_text(json.dumps({"key": "config", "config": {"model": model}}))
        (d / "selection.json").write_text(f'{{"key": "{model}"}}')
        (d / "evaluation.json").write_text("{}")
    assert source_for("m", [other, tmp_path / "missing", demo]) == demo
    assert source_for("y", [other, demo]) is None
    target.mkdir(parents=True)
    (target / "tokens.json").write_text("mine")
    (demo / "tokens.json").write_text("theirs")
    assert adopt(target, demo) == [
        "selection.json"
    ]  # tokens.json exists; evaluation.json is no stage artifact
    assert (target / "tokens.json").read_text() == "mine" and not (target / "evaluation.json").exists()
    assert adopt(target, demo) == []  # already there
    with pytest.raises(AlignlabError, match="not a `refusal run` directory"):
        check_reuse([tmp_path / "s"])
