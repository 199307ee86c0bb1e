import json

import pytest
import torch

from alignlab.cli import main
from alignlab.errors import AlignlabError
from alignlab.models import load_model
from alignlab.models.tiny import tiny_model


@pytest.fixture
def saved_tiny(tmp_path):
    model, tok = tiny_model("qwen2")
    path = tmp_path / "tiny-qwen2"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model


def test_local_directory_roundtrip(saved_tiny):
    path, model = saved_tiny
    loaded = load_model(str(path), device="cpu")
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, model(ids).logits)
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.dtype == torch.float32


def test_pickle_weights_refused(tmp_path, saved_tiny):
    path, model = saved_tiny
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((path / "config.json").read_text())
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(AlignlabError, match="--allow-pickle"):
        load_model(str(pickled))
    with pytest.raises(AlignlabError, match="pickle"):
        load_model(str(pickled / "pytorch_model.bin"))


def test_bad_specs_are_one_line_errors(tmp_path):
    with pytest.raises(AlignlabError, match="not a model directory"):
        load_model(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlignlabError, match="config.json"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(AlignlabError, match="GGUF file"):
        load_model(str(tmp_path / "x.gguf"))
    with pytest.raises(AlignlabError, match="dtype"):
        load_model("smollm2-135m-instruct", dtype="int3")


def test_models_info_json(saved_tiny, capsys):
    path, _ = saved_tiny
    assert main(["models", "info", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["family"] == "qwen2" and data["n_layers"] == 3 and data["d_model"] == 64
    assert data["tied_embeddings"] is True and data["norm_placement"] == "pre"
    assert data["writers"][2] == ["model.layers.2.self_attn.o_proj", "model.layers.2.mlp.down_proj"]


def test_cli_error_is_one_line(capsys):
    assert main(["models", "info", "/definitely/missing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignlab: error:") and err.count("\n") == 1


@pytest.mark.integration
def test_default_model_loads_offline_and_answers(default_model):
    from alignlab.models.chat import chat_format

    fmt = chat_format(default_model.tokenizer)
    enc = fmt.encode(["What is the capital of France?"])
    out = default_model.model.generate(
        enc.input_ids, attention_mask=enc.attention_mask, max_new_tokens=12, do_sample=False
    )
    text = default_model.tokenizer.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in text
    # the second load reads the safetensors cache
    assert (default_model.source.endswith("smollm2-135m-instruct-" + default_model.source.rsplit("-", 1)[-1]))
