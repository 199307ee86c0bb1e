import pytest

from alignlab.errors import TemplateError
from alignlab.models.chat import chat_format
from alignlab.models.tiny import tiny_tokenizer

# Hand-written fixtures in the style of each family's template; the EOI text is what must follow the user text.
TEMPLATES = {
    "chatml(qwen2,smollm2)": (
        "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}",
        "<|im_end|>\n<|im_start|>assistant\n",
    ),
    "llama3": (
        "{{ bos_token }}{% for m in messages %}{{'<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + "
        "m['content'] + '<|eot_id|>'}}{% endfor %}{% if add_generation_prompt %}"
        "{{'<|start_header_id|>assistant<|end_header_id|>\n\n'}}{% endif %}",
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "gemma": (
        "{{ bos_token }}{% for m in messages %}{{'<start_of_turn>' + ('model' if m['role'] == 'assistant' else "
        "m['role']) + '\n' + m['content'] + '<end_of_turn>\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}",
        "<end_of_turn>\n<start_of_turn>model\n",
    ),
    "llama2/mistral": (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{'[INST] ' + m['content'] + ' [/INST]'}}"
        "{% endif %}{% endfor %}",
        " [/INST]",
    ),
    "phi3": (
        "{% for m in messages %}{{'<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{'<|assistant|>\n'}}{% endif %}",
        "<|end|>\n<|assistant|>\n",
    ),
}


@pytest.mark.parametrize("name", TEMPLATES)
def test_sentinel_diff_finds_post_instruction_tokens(name):
    template, eoi_text = TEMPLATES[name]
    tok = tiny_tokenizer()
    tok.chat_template = template
    fmt = chat_format(tok)
    assert fmt.eoi_text == eoi_text
    assert fmt.eoi_ids == tuple(tok(eoi_text, add_special_tokens=False)["input_ids"])
    enc = fmt.encode(["short", "a noticeably longer instruction"])
    # left padding: every row ends with the EOI ids
    for row in enc.input_ids:
        assert tuple(row[-fmt.n_eoi:].tolist()) == fmt.eoi_ids
    assert enc.attention_mask[0, 0] == 0 and enc.attention_mask[1, 0] == 1


def test_system_prompt_kept_and_eoi_unchanged():
    tok = tiny_tokenizer()
    plain = chat_format(tok)
    with_system = chat_format(tok, system="You are careful.")
    assert with_system.eoi_ids == plain.eoi_ids
    assert "You are careful." in with_system.render("hi")


def test_missing_template_points_to_option():
    tok = tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(TemplateError, match="--chat-template"):
        chat_format(tok)
    fmt = chat_format(tok, allow_fallback=True)
    assert fmt.template_source == "fallback"
    assert fmt.eoi_text == "\n\nAssistant:"


def test_template_file_option(tmp_path):
    tok = tiny_tokenizer()
    tok.chat_template = None
    path = tmp_path / "t.jinja"
    path.write_text(TEMPLATES["phi3"][0])
    assert chat_format(tok, chat_template=path).eoi_text == TEMPLATES["phi3"][1]


def test_content_rewriting_template_raises():
    tok = tiny_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}\nAssistant:"
    with pytest.raises(TemplateError, match="rewrites"):
        chat_format(tok)


def test_content_dependent_suffix_raises():
    tok = tiny_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} ({{ m['content'][:2] }}){% endfor %}"
    with pytest.raises(TemplateError, match="depends"):
        chat_format(tok)


def _merging_tokenizer():
    """A byte-level BPE whose one merge ('!' + newline) lets user text fuse with the template suffix."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<pad>": 0} | {ch: i + 1 for i, ch in enumerate(alphabet)}
    vocab["!Ċ"] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[("!", "Ċ")]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>")
    tok.chat_template = "{% for m in messages %}User: {{ m['content'] }}{% endfor %}{{ '\\nAssistant:' }}"
    return tok


def test_boundary_merge_is_excluded_and_counted():
    fmt = chat_format(_merging_tokenizer())
    prompts = [f"question number {i}" for i in range(60)] + ["wow!"]
    kept, bad = fmt.check_boundary(prompts)
    assert bad == [60] and len(kept) == 60
    enc = fmt.encode(prompts)  # 1/61 < 2 %: excluded, not fatal
    assert enc.kept == list(range(60))
    with pytest.raises(TemplateError, match="do not end with"):
        fmt.encode(["wow!", "yes!", "fine"])
