import numpy as np
import pytest
import torch

from alignlab.errors import AlignlabError
from alignlab.models.tiny import tiny_model
from alignlab.refusal.edit import orthogonalize
from alignlab.refusal.gguf_export import _permute, _unpermute, export_gguf, gguf_tensors, read_back


@pytest.fixture
def edited_llama():
    model, tok = tiny_model("llama", attention_bias=False, mlp_bias=False)
    orthogonalize(model, torch.randn(64, generator=torch.Generator().manual_seed(0)))
    return model, tok


def test_permutation_round_trip():
    w = np.arange(64 * 8, dtype=np.float32).reshape(64, 8)
    assert np.array_equal(_unpermute(_permute(w, 4), 4), w)
    assert not np.array_equal(_permute(w, 4), w)


@pytest.mark.parametrize("f16", [False, True])
def test_export_reads_back_equal(edited_llama, tmp_path, f16):
    from gguf import GGUFReader

    model, tok = edited_llama
    path = export_gguf(model, tok, tmp_path / "m.gguf", f16=f16)
    assert read_back(path, model) == 0.0  # exact in the file's own precision
    reader = GGUFReader(str(path))
    names = {t.name for t in reader.tensors}
    assert "output.weight" in names  # the edit untied the head; the file keeps both
    assert len(names) == len(gguf_tensors(model)) == 3 + 9 * 3
    field = reader.fields["llama.block_count"]
    assert int(field.parts[field.data[0]][0]) == 3
    assert not list(tmp_path.glob(".*.tmp"))


def test_refuses_other_families_and_biases(tmp_path):
    gpt2, tok = tiny_model("gpt2")
    with pytest.raises(AlignlabError, match="llama-family"):
        export_gguf(gpt2, tok, tmp_path / "x.gguf")
    biased, tok = tiny_model("llama")
    with pytest.raises(AlignlabError, match="biases"):
        export_gguf(biased, tok, tmp_path / "y.gguf")
    assert not (tmp_path / "x.gguf").exists()
