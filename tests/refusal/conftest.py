"""Fixtures shared by the refusal tests."""

import pytest

from alignlab.models.tiny import tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    model, tok = tiny_model("llama", seed=3)
    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
