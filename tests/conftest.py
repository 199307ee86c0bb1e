"""Shared fixtures. Tests run on CPU with tiny random models; a few `integration` tests use the real
embedded default model (still offline)."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def tiny_llama():
    from alignlab.models.tiny import tiny_model

    return tiny_model("llama", seed=0)


@pytest.fixture(scope="session")
def default_model():
    """The real embedded default (SmolLM2-135M-Instruct), loaded once per session."""
    from alignlab.models import load_model

    return load_model("smollm2-135m-instruct", device="cpu")


CHROMIUM = "/usr/bin/chromium"


def run_chromium(args: list[str], profile) -> tuple[str, list[str]]:
    """Run headless Chromium with a fresh profile; (stdout, console lines from the page)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--enable-logging=stderr", "--v=0"]
    done = subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=False)
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture
def chromium():
    """``run_chromium`` for tests marked ``browser``; skips where /usr/bin/chromium is absent."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("needs /usr/bin/chromium")
    return run_chromium
