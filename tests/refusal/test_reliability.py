"""Hostile-user inputs to `alignlab refusal ...`: each gets a one-line error before any work, or a damaged
artifact is recomputed, never a traceback or a silent wrong result (issue 12)."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from alignlab.cli import main
from alignlab.models.tiny import tiny_model

SMALL = ["--n-train", "6", "--n-val", "4", "--n-test-harmful", "3", "--n-test-harmless", "3",
         "--eval-max-new-tokens", "6", "--eval-allow-short", "--kl-max", "100", "--induce-min=-1e9",
         "--screen-n", "2", "--full-k", "3", "--batch-size", "8", "--device", "cpu", "--no-export"]


@pytest.fixture(scope="module")
def run_dir(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL]) == 0
    return out


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err and err[-1].startswith("alignlab: error:"), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


@pytest.mark.parametrize("flag,value,names", [
    ("--kl-max", "nan", "--kl-max"),
    ("--induce-min", "inf", "--induce-min"),
    ("--prune-frac", "nan", "--prune-frac"),
    ("--eval-actadd-coeff", "nan", "--eval-actadd-coeff"),
    ("--confirm-tokens", "0", "--confirm-tokens"),
])
def test_bad_numbers_rejected_before_any_work(tiny_dir, tmp_path, capsys, flag, value, names):
    out = tmp_path / "r"
    code = main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL, f"{flag}={value}"])
    assert names in _one_line_error(capsys, code)
    assert not out.exists()  # validated before the run directory is even created


def test_short_eval_tokens_name_the_real_flags(tiny_dir, tmp_path, capsys):
    args = [a for a in SMALL if a != "--eval-allow-short"]
    args[args.index("--eval-max-new-tokens") + 1] = "8"
    line = _one_line_error(capsys, main(["refusal", "run", str(tiny_dir), "--out", str(tmp_path / "r"), *args]))
    assert "--eval-max-new-tokens" in line and "--eval-allow-short" in line
    assert " --max-new-tokens" not in line and " --allow-short" not in line


def test_no_export_with_export_gguf_is_an_error(tiny_dir, tmp_path, capsys):
    code = main(["refusal", "run", str(tiny_dir), "--out", str(tmp_path / "r"), *SMALL, "--export-gguf"])
    assert "--no-export" in _one_line_error(capsys, code)


@pytest.mark.parametrize("kind", ["file", "under-file"])
def test_out_that_is_a_file(tiny_dir, tmp_path, capsys, kind):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker if kind == "file" else blocker / "run"
    line = _one_line_error(capsys, main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL]))
    assert "--out" in line and "blocker" in line
    assert blocker.read_text() == "x"


def test_allow_pickle_is_honoured(tmp_path, capsys):
    model, tok = tiny_model("llama", seed=3)
    path = tmp_path / "pickled"
    model.config.save_pretrained(path)
    model.generation_config.save_pretrained(path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")  # a legacy pickle checkpoint
    tok.save_pretrained(path)
    assert (path / "pytorch_model.bin").is_file() and not list(path.glob("*.safetensors"))
    refused = main(["refusal", "extract", str(path), "--out", str(tmp_path / "a"), *SMALL])
    assert "--allow-pickle" in _one_line_error(capsys, refused)
    assert main(["refusal", "extract", str(path), "--out", str(tmp_path / "b"), *SMALL, "--allow-pickle"]) == 0
    assert (tmp_path / "b" / "directions.safetensors").is_file()


def test_prompt_longer_than_context_is_refused_naming_it(tmp_path, capsys):
    model, tok = tiny_model("llama", seed=3, max_position_embeddings=1024)
    path = tmp_path / "short-ctx"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    long_prompts = tmp_path / "long.txt"
    long_prompts.write_text("\n".join(["Describe " + "a very long garden path " * 80] * 4) + "\n")
    code = main(["refusal", "run", str(path), "--out", str(tmp_path / "r"), *SMALL, "--harmless-test",
                 str(long_prompts)])
    line = _one_line_error(capsys, code)
    assert "harmless test prompt #1" in line and "context of 1024" in line


def _copy(run_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(run_dir, out)
    return out


@pytest.mark.parametrize("damage", ["truncate-directions", "binary-tokens", "truncate-direction"])
def test_damaged_artifact_is_recomputed(run_dir, tiny_dir, tmp_path, capsys, damage):
    out = _copy(run_dir, tmp_path)
    if damage == "truncate-directions":
        data = (out / "directions.safetensors").read_bytes()
        (out / "directions.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "truncate-direction":
        data = (out / "direction.safetensors").read_bytes()
        (out / "direction.safetensors").write_bytes(data[:40])
    else:
        (out / "tokens.json").write_bytes(b"\xff\xfe\x00garbage\x80")
    assert main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL]) == 0
    err = capsys.readouterr().err
    assert "damaged" in err and "recomputing" in err
    before = json.loads((run_dir / "report.json").read_text())
    after = json.loads((out / "report.json").read_text())
    assert after["selected"] == before["selected"] and after["refusal_rate"] == before["refusal_rate"]
    for name in ("directions.safetensors", "direction.safetensors"):  # rewritten whole, same numbers
        a, b = load_file(str(out / name)), load_file(str(run_dir / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stale_temporaries_removed_and_reused_stages_marked(run_dir, tiny_dir, tmp_path, capsys):
    out = _copy(run_dir, tmp_path)
    stale = out / ".model.abc123"  # what a kill during export leaves behind
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 1000)
    (out / ".report.json.xyz.tmp").write_text("{")
    assert main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL]) == 0
    assert not stale.exists() and not (out / ".report.json.xyz.tmp").exists()
    report = json.loads((out / "report.json").read_text())
    assert set(report["reused_stages"]) >= {"data", "tokens", "extract", "select", "edit", "evaluate"}
    assert "select" in report["timings_s"] and "(reused)" in (out / "report.md").read_text()
    fresh = json.loads((run_dir / "report.json").read_text())
    assert "select" not in fresh["reused_stages"]


@pytest.fixture(scope="module")
def direction_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("dirs")
    save_file({"direction": torch.zeros(64)}, str(root / "zero.safetensors"))
    save_file({"direction": torch.full((64,), float("nan"))}, str(root / "nan.safetensors"))
    save_file({"direction": torch.ones(64)}, str(root / "ok.safetensors"))
    save_file({"direction": torch.ones(32)}, str(root / "wrong.safetensors"))
    save_file({"direction": torch.ones(2, 64)}, str(root / "matrix.safetensors"))  # only 'directions' is [k, d]
    save_file({"directions": torch.ones(64)}, str(root / "flat.safetensors"))
    return root


@pytest.mark.parametrize("extra,needle", [
    (["--direction", "zero.safetensors"], "all zeros"),
    (["--direction", "nan.safetensors"], "NaN"),
    (["--direction", "wrong.safetensors"], "d_model 32"),
    (["--direction", "matrix.safetensors"], "must be a vector [d_model]"),
    (["--direction", "flat.safetensors"], "must be [k, d_model]"),
    (["--direction", "ok.safetensors", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["--direction", "ok.safetensors", "--max-new-tokens", "-3"], "--max-new-tokens"),
    (["--direction", "ok.safetensors", "--add", "--layer", "1", "--coeff", "nan"], "--coeff"),
    (["--direction", "ok.safetensors", "--layer", "1"], "--add"),
    (["--direction", "ok.safetensors", "--add", "--layer", "7"], "--layer must be in [0, 2]"),
])
def test_ablate_refuses_meaningless_input(tiny_dir, direction_files, capsys, extra, needle):
    extra = [str(direction_files / a) if a.endswith(".safetensors") else a for a in extra]
    code = main(["refusal", "ablate", str(tiny_dir), "--prompt", "hi", "--device", "cpu", *extra])
    assert needle in _one_line_error(capsys, code)


def test_ablate_works_with_a_good_direction(tiny_dir, direction_files, capsys):
    code = main(["refusal", "ablate", str(tiny_dir), "--prompt", "hi", "--device", "cpu", "--max-new-tokens", "3",
                 "--direction", str(direction_files / "ok.safetensors")])
    assert code == 0 and capsys.readouterr().out.strip() != ""
