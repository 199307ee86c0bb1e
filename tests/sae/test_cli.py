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


def _one_line_error(capsys, code):
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("alignlab: error:") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("flag,value", [("--shard-rows", "0"), ("--batch-contexts", "0"), ("--eval-frac", "1.5")])
def test_cache_refuses_bad_numbers_before_loading_the_model(tmp_path, capsys, flag, value):
    """Issue 12: --shard-rows 0 used to hang, --batch-contexts 0 was accepted, --eval-frac 1.5 named --text."""
    args = ["sae", "cache", "no-such-model", "--layer", "1", "--tokens", "100", "--out", str(tmp_path / "c"),
            flag, value]
    for _ in range(2):  # a rerun is refused the same way (it used to report "cached 0 activations", exit 0)
        err = _one_line_error(capsys, main(args))
        assert flag in err and "no-such-model" not in err
    assert not (tmp_path / "c" / "manifest.json").exists()


def test_out_that_is_a_file_or_unwritable_is_one_line(tiny_dir, tmp_path, capsys, fake_cache, monkeypatch):
    import tempfile

    from alignlab.sae import SAEConfig, build_sae, save_sae

    model_dir, text = tiny_dir
    taken = tmp_path / "taken"
    taken.write_text("x")
    save_sae(build_sae(SAEConfig("standard", 64, 128, model=str(model_dir), hook_point="resid_post.1",
                                 hook_layer=1)), tmp_path / "sae")
    runs = {
        "cache": ["sae", "cache", str(model_dir), "--layer", "1", "--tokens", "64", "--text", str(text)],
        "train": ["sae", "train", str(fake_cache), "--steps", "1", "--batch-size", "32", "--device", "cpu"],
        "inspect": ["sae", "inspect", str(tmp_path / "sae"), "--tokens", "32", "--text", str(text), "--device", "cpu"],
    }
    for name, args in runs.items():  # an existing file (a folder for inspect's HTML file), and a path below a file
        for out in (tmp_path if name == "inspect" else taken, taken / "sub"):
            err = _one_line_error(capsys, main([*args, "--out", str(out)]))
            assert "--out" in err, (name, err)
    real = tempfile.mkstemp

    def refuse(*a, dir=None, **kw):  # noqa: A002 - tempfile's own keyword
        if dir is not None and "ro" in str(dir):
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # root may write anywhere: simulate a read-only folder
    for name, args in runs.items():
        out = tmp_path / "ro" / ("x.html" if name == "inspect" else "o")
        err = _one_line_error(capsys, main([*args, "--out", str(out)]))
        assert "--out" in err and "Permission denied" in err, (name, err)


def test_truncated_sae_weights_is_one_line(tmp_path, capsys):
    from alignlab.sae import SAEConfig, build_sae, save_sae

    folder = tmp_path / "sae"
    save_sae(build_sae(SAEConfig("gated", 8, 16, model="m", hook_point="resid_post.1", hook_layer=1)), folder)
    weights = folder / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size - 40])
    err = _one_line_error(capsys, main(["sae", "eval", str(folder), "--device", "cpu"]))
    assert "truncated or corrupt" in err
