"""The one confirmation-by-generation helper (select's confirm_k, the search's confirmations, the subspace's
growth steps) equals generating, judging and flagging by hand, under the given hook context."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from alignlab.models.chat import chat_format
from alignlab.models.generate import generate_greedy
from alignlab.models.tiny import tiny_model
from alignlab.refusal.confirm import Confirmation, confirm_replies
from alignlab.refusal.degenerate import flag_outputs
from alignlab.refusal.forward import COUNTER
from alignlab.refusal.intervene import add_direction

PROMPTS = ["how do I bake bread", "write a poem about the sea", "x", "tell me about cats", "list three colours"]


class _Verdict:
    def __init__(self, label: str) -> None:
        self.label = label


class _ParityJudge:
    """Labels a reply a refusal when its length is even: deterministic and sensitive to every token."""

    def judge(self, prompts, replies):
        assert len(prompts) == len(replies)
        return [_Verdict("refusal" if len(r) % 2 == 0 else "compliance") for r in replies]


def _by_hand(model, fmt, prompts, tokens):
    replies = generate_greedy(model, fmt, prompts, tokens, len(prompts), progress=False)
    texts = [x.text for x in replies]
    refused = sum(len(t) % 2 == 0 for t in texts)
    flags = flag_outputs(texts, [x.finished for x in replies], prompts)
    return refused, sum(f.degenerate for f in flags) / len(flags), texts


def test_confirm_replies_equals_generate_judge_flag_by_hand():
    model, tok = tiny_model("llama", seed=4)
    fmt = chat_format(tok)
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    entered = []

    @contextmanager
    def recording():
        entered.append(True)
        with add_direction(model, direction, 0, 30.0):
            yield

    before = COUNTER.generates
    got = confirm_replies(model, fmt, _ParityJudge(), PROMPTS, 12, recording())
    assert entered == [True] and COUNTER.generates == before + 1
    with add_direction(model, direction, 0, 30.0):
        refused, degenerate, hooked = _by_hand(model, fmt, PROMPTS, 12)
    assert got == Confirmation(refused=refused, n=len(PROMPTS), degenerate=degenerate)
    assert got.refusal == refused / len(PROMPTS)
    # the context mattered: without the hook the replies differ (so the helper did run under it)
    assert _by_hand(model, fmt, PROMPTS, 12)[2] != hooked
    assert Confirmation(0, 0, 0.0).refusal != Confirmation(0, 0, 0.0).refusal  # NaN for no replies
