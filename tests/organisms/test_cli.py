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
