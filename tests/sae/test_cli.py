"""`alignlab sae cache | train | eval | inspect` end to end on a tiny llama saved to disk."""

from __future__ import annotations

import json

import pytest

from alignlab.cli import main

EVAL_KEYS = {"l0", "mse", "fvu", "explained_variance", "ce_loss_score", "ce_loss_recovered", "delta_lm_loss",
             "kl_div_with_sae", "kl_div_with_ablation", "kl_div_score", "frac_dead", "frac_dense", "shrinkage_gamma",
             "relative_reconstruction_bias", "ce_loss_without_sae", "ce_loss_with_ablation", "ce_loss_with_sae",
             "n_tokens", "hook", "model"}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from alignlab.models.tiny import tiny_model

    model, tok = tiny_model("llama", seed=0)
    d = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    text = tmp_path_factory.mktemp("text") / "corpus.txt"
    text.write_text("\n\n".join(f"Paragraph {i}: words about item {i * 17}, repeated words, more words." * 3
                                for i in range(150)))
    return d, text


@pytest.mark.parametrize("cmd", ["cache", "train", "eval", "inspect"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sae", cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: alignlab sae " + cmd in capsys.readouterr().out


def test_cache_train_eval_inspect(tiny_dir, tmp_path, capsys):
    model_dir, text = tiny_dir
    acts = tmp_path / "acts"
    common = ["--text", str(text), "--split", "all", "--context-size", "24", "--device", "cpu"]
    assert main(["sae", "cache", str(model_dir), "--layer", "1", "--tokens", "1500", "--out", str(acts),
                 "--shard-rows", "512", "--cache-dtype", "float32", *common]) == 0
    man = json.loads((acts / "manifest.json").read_text())
    assert man["n_tokens"] == 1500 and man["hook"] == "resid_post.1" and man["d"] == 64
    capsys.readouterr()

    out = tmp_path / "saes"
    assert main(["sae", "train", str(acts), "--arch", "gated", "--arch", "standard", "--width", "2", "--steps", "6",
                 "--batch-size", "128", "--buffer-rows", "512", "--device", "cpu", "--log-every", "3",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "gated" in printed and "standard_bricken" in printed
    ckpt = out / "sae_0"
    cfg = json.loads((ckpt / "cfg.json").read_text())
    assert cfg["d_in"] == 64 and cfg["d_sae"] == 128 and cfg["architecture"] == "gated"

    assert main(["sae", "eval", str(ckpt), "--json", "--tokens", "300", "--batch-contexts", "4", "--no-progress",
                 "--write-sparsity", *common]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= EVAL_KEYS
    assert result["hook"] == "resid_post.1" and result["n_tokens"] >= 300
    assert result["ce_loss_with_ablation"] != result["ce_loss_without_sae"]
    assert (ckpt / "sparsity.safetensors").is_file()

    assert main(["sae", "eval", str(ckpt), str(out / "sae_1"), "--markdown", "--tokens", "200", "--no-progress",
                 *common]) == 0
    table = capsys.readouterr().out
    assert table.count("\n| ") >= 2 and "CE rec." in table

    html = tmp_path / "dash.html"
    assert main(["sae", "inspect", str(ckpt), "--out", str(html), "--tokens", "200", "--latents", "4",
                 "--no-progress", *common]) == 0
    assert html.is_file() and "wrote" in capsys.readouterr().out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["sae", "train", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignlab: error:") and "manifest.json" in err and err.count("\n") == 1
