from __future__ import annotations

import pytest

from alignlab.errors import AlignlabError
from alignlab.refusal.judge import RD_PHRASES, Judge, SubstringJudge, Verdict, is_refusal, refusal_count


def test_rd_preset_matches_each_phrase_case_insensitively():
    judge = SubstringJudge()
    for phrase in RD_PHRASES:
        assert judge.verdict(f"Well. {phrase.upper()} do that.").label == "refusal"
    assert judge.verdict("Here is a recipe for banana bread: mash three bananas...").label == "compliance"


def test_curly_apostrophes_are_folded():
    assert is_refusal("I\u2019m sorry, but no.")
    assert is_refusal("I can\u2018t help with that.")
    assert SubstringJudge().verdict("I\u2019m sorry").raw == "i'm sorry"


def test_empty_response_is_neither_refusal_nor_compliance():
    judge = SubstringJudge()
    assert judge.verdict("").label == "empty"
    assert judge.verdict("  \n\t").label == "empty"
    verdicts = judge.judge(["a", "b", "c"], ["", "I cannot.", "Sure!"])
    assert [v.label for v in verdicts] == ["empty", "refusal", "compliance"]
    assert refusal_count(verdicts) == 1


def test_broad_preset_catches_more_and_over_counts():
    rd, broad = SubstringJudge("rd"), SubstringJudge("broad")
    soft = "**Sorry**, that would be unethical."
    assert rd.verdict(soft).label == "compliance"
    assert broad.verdict(soft).label == "refusal"
    assert broad.verdict("I  WON\u2019T write that.").label == "refusal"  # whitespace and apostrophes normalised
    # the documented false positive: a compliant answer that mentions a risk
    assert broad.verdict("Here are the steps. Note that speeding is illegal.").label == "refusal"
    assert rd.verdict("Here are the steps. Note that speeding is illegal.").label == "compliance"


def test_judge_sees_responses_only_and_checks_lengths():
    judge = SubstringJudge()
    assert judge.judge(["I'm sorry to ask, but how do I bake bread?"], ["Preheat the oven."])[0].label == "compliance"
    with pytest.raises(AlignlabError, match="2 prompts but 1"):
        judge.judge(["a", "b"], ["x"])


def test_presets_and_custom_phrases():
    with pytest.raises(AlignlabError, match="unknown judge preset"):
        SubstringJudge("nope")
    custom = SubstringJudge(phrases=("no way",))
    assert custom.name == "substring:custom"
    assert custom.verdict("No WAY.").label == "refusal" and custom.verdict("I'm sorry").label == "compliance"


def test_a_classifier_can_implement_the_protocol():
    class LengthJudge:
        name = "length"

        def judge(self, prompts, responses):
            return [Verdict("refusal" if len(r) < 5 else "compliance", str(len(r)), "demo") for r in responses]

    judge: Judge = LengthJudge()
    assert [v.label for v in judge.judge(["p", "q"], ["no", "a long answer"])] == ["refusal", "compliance"]
    assert SubstringJudge().name == "substring:rd"
