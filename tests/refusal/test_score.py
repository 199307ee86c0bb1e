import math

import pytest
import torch

from alignlab.models.chat import chat_format
from alignlab.models.tiny import tiny_tokenizer
from alignlab.refusal.score import (
    auroc,
    calibrate_refusal_tokens,
    first_token_kl,
    refusal_score,
    seed_token_ids,
)


def test_refusal_score_matches_closed_form():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    lp = torch.log_softmax(logits, -1)
    s = refusal_score(lp, [0, 2])
    for row in range(2):
        p = float(torch.softmax(logits[row], -1)[[0, 2]].sum())
        assert s[row].item() == pytest.approx(math.log(p + 1e-8) - math.log(1 - p + 1e-8), rel=1e-12)
    assert s[1].item() == pytest.approx(0.0, abs=1e-7)  # p = 1/2 -> log-odds 0


def test_first_token_kl_closed_form_and_zero_on_identity():
    a = torch.log_softmax(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64), -1)
    b = torch.log_softmax(torch.tensor([[3.0, 2.0, 1.0]], dtype=torch.float64), -1)
    expected = float((a.exp() * (a - b)).sum())
    assert first_token_kl(a, b).item() == pytest.approx(expected)
    assert first_token_kl(a, a).item() == 0.0


def test_auroc():
    assert auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auroc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5
    assert auroc(torch.tensor([1.0, 3.0]), torch.tensor([2.0])) == 0.5


def test_seed_tokens_in_context_byte_level():
    tok = tiny_tokenizer()
    fmt = chat_format(tok)
    ids = seed_token_ids(fmt)
    # byte-level, no merges: each seed maps to the token of its first byte
    assert ids["I"] == tok.convert_tokens_to_ids("I")
    assert ids["Sorry"] == tok.convert_tokens_to_ids("S")


def test_seed_tokens_sentencepiece_style():
    """A SentencePiece-like fixture: words carry a '▁' marker; the in-context first token must be found."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "▁I": 1, "▁As": 2, "▁Sorry": 3, "▁Un": 4, "fortunately": 5, "User:": 6, "▁hi": 7,
             "▁Hello": 8, "\n": 9, "Bot:": 10, "▁": 11}
    core = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", continuing_subword_prefix=""))
    core.pre_tokenizer = pre_tokenizers.Metaspace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")
    tok.chat_template = "{% for m in messages %}User: {{ m['content'] }}{% endfor %} Bot: "
    fmt = chat_format(tok)
    ids = seed_token_ids(fmt)
    assert ids["I"] == 1 and ids["As"] == 2 and ids["Sorry"] == 3 and ids["Unfortunately"] == 4


def test_calibration_keeps_frequent_refusal_openers():
    tok = tiny_tokenizer()
    fmt = chat_format(tok)
    ids = seed_token_ids(fmt)
    vocab = 300
    harmful = torch.full((20, vocab), -10.0, dtype=torch.float64)
    harmless = torch.full((20, vocab), -10.0, dtype=torch.float64)
    harmful[:10, ids["I"]] = 0.0  # half the harmful prompts open with "I"
    harmful[10:, ids["Sorry"]] = 0.0
    harmless[:, 50] = 0.0
    harmless[0, ids["As"]] = 1.0  # one harmless opener "As" (5 %) but no harmful one
    cal = calibrate_refusal_tokens(fmt, harmful, harmless)
    assert set(cal.words) == {"I", "Sorry"}
    assert cal.harmful_open["I"] == 0.5 and cal.harmless_open["As"] == 0.05
    assert calibrate_refusal_tokens(fmt, harmful, harmless, override=("As",)).words == ("As",)
