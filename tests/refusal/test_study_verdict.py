"""Study verdicts on constructed counts: the tests fire when they should and only then (issue 16)."""

import pytest

from alignlab.refusal.stats import mcnemar_exact
from alignlab.refusal.study_verdict import (
    Paired,
    binary_test,
    claim_verdict,
    compare,
    equivalence_verdict,
    many_models_verdict,
    sign_test,
)


def paired(refused_k: int, n: int = 20, degenerate_k: int = 0, kl: float = 0.5, kl_list=None) -> Paired:
    """The first k prompts refused / degenerate; KL the same on every harmless prompt unless given."""
    return Paired(
        [i < refused_k for i in range(n)],
        [i < degenerate_k for i in range(n)],
        kl_list if kl_list is not None else [kl] * n,
    )


def test_binary_test_uses_wilson_and_mcnemar_on_the_same_prompts():
    t = binary_test("refusal", [False] * 20, [True] * 20, 0.05, 0.05)
    assert (t.better, t.test) == ("winner", "wilson+mcnemar") and t.p == pytest.approx(2 / 2**20)
    # 6 discordant pairs all one way: McNemar p = 2/64 = 0.031 < 0.05, but the Wilson intervals overlap
    w, o = [False] * 20, [i < 6 for i in range(20)]
    t = binary_test("refusal", w, o, 0.05, 0.05)
    assert (t.better, t.test) == ("winner", "mcnemar") and t.p == pytest.approx(mcnemar_exact(w, o))
    assert binary_test("refusal", w, o, 0.01, 0.01).better == "none"  # same data, stricter alpha
    # the alternative being better is judged at its own (corrected) alpha
    assert binary_test("refusal", o, w, 0.05, 0.05).better == "other"
    assert binary_test("refusal", o, w, 0.05, 0.01).better == "none"
    assert binary_test("refusal", o, o, 0.05, 0.05).better == "none"


def test_sign_test_ignores_float_noise_but_not_a_consistent_difference():
    base = [0.3 + 0.01 * i for i in range(20)]
    noise = [x + 1e-6 for x in base]  # consistently, but negligibly, higher
    assert sign_test("kl", base, noise, 0.05, 0.05).better == "none"
    worse = [x + 0.2 for x in base]
    t = sign_test("kl", base, worse, 0.05, 0.05)
    assert (t.better, t.test) == ("winner", "sign") and t.p == pytest.approx(2 / 2**20)
    assert sign_test("kl", worse, base, 0.05, 0.05).better == "other"


def test_compare_is_lexicographic_refusal_then_agreeing_damage():
    ablation = paired(0, kl=0.5)
    assert (
        compare("weak", ablation, paired(18, kl=0.0), 0.05, 0.05).result == "winner"
    )  # bypass beats no damage
    c = compare("strong", ablation, paired(0, kl=2.0), 0.05, 0.05)  # same bypass, four times the KL
    assert (c.result, c.decided_by) == ("winner", "kl")
    c = compare("cheap", ablation, paired(0, kl=0.1), 0.05, 0.05)
    assert (c.result, c.decided_by) == ("other", "kl")
    # degenerate only where it refuses anyway (bypass ties), lower KL: a trade-off
    c = compare("mixed", paired(12, degenerate_k=12, kl=0.1), paired(12, degenerate_k=0, kl=0.5), 0.05, 0.05)
    assert (c.result, c.decided_by) == ("none", "trade-off")
    c = compare("same", ablation, paired(0, kl=0.5), 0.05, 0.05)
    assert (c.result, c.decided_by) == ("none", "tie")


def test_degenerate_replies_are_no_bypass():
    # the alternative stops every refusal by wrecking every reply: no bypass at all, the ablation wins
    ablation = Paired([i < 13 for i in range(20)], [13 <= i < 15 for i in range(20)], [0.15] * 20)
    gibberish = Paired([False] * 20, [True] * 20, [2.6] * 20)
    c = compare("subtract", ablation, gibberish, 0.05, 0.05)  # 15 vs 20 failed: 5 discordant, p = 0.0625
    assert c.tests[0].metric == "bypass_failed" and c.tests[0].p == pytest.approx(2 / 2**5)
    assert (c.result, c.decided_by) == ("winner", "degenerate+kl")  # on refusal alone it would have lost (13 vs 0)
    assert compare("subtract", Paired(ablation.degenerate, ablation.degenerate, ablation.kl), gibberish, 0.05,
                   0.05).decided_by == "bypass_failed"  # 2 vs 20 failed
    # a refusal counted once even when it is also degenerate: 3 failures vs 3 is a tie on bypass
    both = Paired([i < 3 for i in range(20)], [i < 3 for i in range(20)], [0.5] * 20)
    split = Paired([i < 2 for i in range(20)], [i == 2 for i in range(20)], [0.5] * 20)
    assert compare("x", both, split, 0.05, 0.05).tests[0].better == "none"


def test_claim_verdicts_supported_not_supported_inconclusive():
    winner = paired(0, kl=0.5)
    assert (
        claim_verdict("w", winner, {"a": paired(15), "b": paired(0, kl=3.0)}, ["a", "b"], 0.05).verdict
        == "supported"
    )
    v = claim_verdict("w", winner, {"a": paired(15), "b": paired(0, kl=0.5)}, ["a", "b"], 0.05)
    assert v.verdict == "inconclusive" and "b (tie)" in v.reason
    # an optional (not required) alternative that ties leaves the claim supported
    assert (
        claim_verdict("w", winner, {"a": paired(15), "b": paired(0, kl=0.5)}, ["a"], 0.05).verdict
        == "supported"
    )
    v = claim_verdict("w", paired(12), {"a": paired(0), "b": paired(15)}, ["a", "b"], 0.05)
    assert v.verdict == "not supported" and v.reason.startswith("beaten by a (bypass_failed")


def test_claim_verdict_corrects_for_many_alternatives_against_the_winner():
    winner = paired(6)
    alternatives = {
        name: paired(0) for name in "abcd"
    }  # each: 6 discordant pairs, p = 0.031 (< 0.05, > 0.05/4)
    v = claim_verdict("w", winner, alternatives, ["a"], 0.05)
    assert v.alpha_against == pytest.approx(0.0125) and v.verdict == "inconclusive"
    assert claim_verdict("w", winner, {"a": paired(0)}, ["a"], 0.05).verdict == "not supported"


def test_equivalence_verdict_for_the_weight_edit():
    hooks = paired(2, degenerate_k=1, kl_list=[0.4 + 0.01 * i for i in range(20)])
    same = paired(2, degenerate_k=1, kl_list=[0.4 + 0.01 * i + 1e-7 for i in range(20)])
    v = equivalence_verdict(hooks, same, 0.05, 0.05)
    assert v["verdict"] == "supported" and v["refusal_rate_difference"] == 0
    v = equivalence_verdict(hooks, paired(12, degenerate_k=1, kl_list=hooks.kl), 0.05, 0.05)
    assert v["verdict"] == "not supported" and v["tests"]["refusal"]["differs"]
    v = equivalence_verdict(
        hooks, paired(5, degenerate_k=1, kl_list=hooks.kl), 0.05, 0.05
    )  # 3 discordant: p 0.25
    assert v["verdict"] == "inconclusive" and v["refusal_rate_difference"] == pytest.approx(0.15)


def test_many_models_verdict():
    one = many_models_verdict({"m1": {"c1": "supported"}})
    assert one["verdict"] == "inconclusive" and "needs at least 2" in one["reason"]
    agree = many_models_verdict(
        {"m1": {"c1": "supported", "c2": "not supported"}, "m2": {"c1": "supported", "c2": "not supported"}}
    )
    assert agree["verdict"] == "supported"
    split = many_models_verdict({"m1": {"c1": "supported"}, "m2": {"c1": "not supported"}})
    assert split["verdict"] == "not supported" and "c1" in split["reason"]
    open_ = many_models_verdict({"m1": {"c1": "supported"}, "m2": {"c1": "inconclusive"}})
    assert open_["verdict"] == "inconclusive" and open_["verdicts"]["c1"] == {
        "m1": "supported",
        "m2": "inconclusive",
    }
