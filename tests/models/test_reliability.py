"""Loading bad model specs: one line, fast, naming the fix (issue 12)."""

import time

import pytest
import torch

from alignlab.cli import main
from alignlab.errors import AlignlabError
from alignlab.models.loading import load_model, pick_device


def test_cuda_without_cuda_is_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(AlignlabError, match="--device cpu"):
        pick_device("cuda")
    assert main(["models", "info", "smollm2-135m-instruct", "--device", "cuda"]) == 2
    assert "no CUDA" in capsys.readouterr().err


def test_unknown_device_string():
    with pytest.raises(AlignlabError, match="unknown --device"):
        pick_device("tpu9")


def test_unknown_hub_id_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    start = time.perf_counter()
    with pytest.raises(AlignlabError, match="not in the Hugging Face cache") as info:
        load_model("no-such-org/no-such-model", device="cpu")
    assert time.perf_counter() - start < 5 and "\n" not in str(info.value)


def test_unknown_hub_id_unreachable_endpoint_fails_fast(monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    start = time.perf_counter()
    with pytest.raises(AlignlabError, match="cannot be reached"):
        load_model("no-such-org/no-such-model", device="cpu")
    assert time.perf_counter() - start < 5


def test_malformed_hub_id():
    with pytest.raises(AlignlabError, match="check the spelling"):
        load_model("not a model!", device="cpu")


@pytest.mark.parametrize("content", [b"", b"not a gguf file at all" * 10, b"GGUF\x03\x00\x00\x00" + b"\x01" * 40])
def test_random_or_truncated_gguf(tmp_path, monkeypatch, content, capsys):
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    assert main(["models", "info", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "GGUF" in err[0] and "bad.gguf" in err[0]


@pytest.mark.integration
def test_truncated_real_gguf(tmp_path, monkeypatch, capsys):
    from alignlab.models.embedded import EMBEDDED, embedded_file

    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path / "cache"))
    real = embedded_file(EMBEDDED["smollm2-135m-instruct"])
    cut = tmp_path / "cut.gguf"
    with real.open("rb") as f:
        cut.write_bytes(f.read(real.stat().st_size // 2))
    assert main(["models", "info", str(cut)]) == 2
    assert "truncated" in capsys.readouterr().err
