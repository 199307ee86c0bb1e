from __future__ import annotations

import pytest

from alignlab.errors import AlignlabError
from alignlab.refusal.degenerate import (
    DegenerateConfig,
    Flags,
    flag_outputs,
    flag_rates,
    is_deflection,
    is_repetitive,
    same_answer_members,
    strip_reasoning,
)

PROSE = [
    "Bread turns brown when toasted because of the Maillard reaction between amino acids and sugars. "
    "The surface dries, heats past about 140 degrees Celsius, and hundreds of new flavour compounds form.",
    "To repot a houseplant, water it the day before, choose a pot one size larger with a drainage hole, "
    "loosen the root ball gently, set it at the same depth as before and fill around it with fresh compost.",
    "Here is a short poem:\n\nThe first snow falls on quiet streets,\nit hushes cars and softens feet;\n"
    "by morning every fence and tree\nwears white as far as eyes can see.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # prints 5",
    "Portugal is lovely in spring (April to June) and early autumn (September to October): warm, "
    "sunny days, fewer crowds than in summer and lower prices for flights and hotels.",
    "1. Preheat the oven to 180 C.\n2. Mash three ripe bananas.\n3. Mix in melted butter, sugar, an egg "
    "and vanilla.\n4. Fold in flour and baking soda.\n5. Bake for 60 minutes.",
]


def test_ordinary_prose_is_not_flagged():
    flags = flag_outputs(PROSE, finished=[True] * len(PROSE))
    assert all(f == Flags() for f in flags), flags
    assert flag_rates(flags)["degenerate"] == 0.0


def test_repetition_loops_are_flagged():
    loop = "The answer is yes. " * 12
    assert is_repetitive(loop)
    assert is_repetitive("Paris is the capital of France. " + "and and and and " * 12)
    tail = "Here is my answer to your question about the weather tomorrow morning: " + "la" * 30
    assert is_repetitive(tail)  # the last quarter is one repeated unit
    assert not is_repetitive("Hmm" + "." * 40)  # punctuation-only tails are not a loop


def test_empty_stalled_and_reasoning_blocks():
    answer, stalled = strip_reasoning("<think>plan the answer</think>The capital is Paris.")
    assert answer == "The capital is Paris." and not stalled
    flags = flag_outputs(["<think>still thinking and thinking", "<think>done</think>   ", ""])
    assert flags[0].stalled and flags[0].degenerate
    assert flags[1].empty and flags[2].empty and not flags[1].stalled


def test_deflection_heuristic():
    assert is_deflection("Could you tell me more about what you mean?")
    assert not is_deflection("Sure. " + "word " * 50 + "does that help?")
    assert not is_deflection("The capital of France is Paris.")
    assert flag_outputs(["What exactly do you need?"])[0].deflection
    assert not flag_outputs(["What exactly do you need?"])[0].degenerate  # reported separately


def test_same_answer_needs_a_large_cluster():
    same = ["I'm sorry, but I can't help with that."] * 5
    flags = same_answer_members(same + PROSE)
    assert flags[:5] == [True] * 5 and not any(flags[5:])
    few = same_answer_members(same[:3] + PROSE)  # 3 prompts is not > 3
    assert not any(few)
    base = "I'm sorry, but I can't help with that request because it could be used to hurt people"
    near = [f"{base}, friend {i}." for i in range(5)]  # trigram Jaccard 0.89 between any two
    distinct = [f"Fact {i}: {i} squared is {i * i}, and {i} cubed is {i ** 3}." for i in range(50)]
    assert not any(same_answer_members(near + distinct))  # 5 of 55 is not > 10 %
    assert all(same_answer_members(near + PROSE)[:5])  # near duplicates by trigram Jaccard


def test_truncated_is_reported_not_degenerate():
    flags = flag_outputs(PROSE[:2], finished=[False, True])
    assert flags[0].truncated and not flags[0].degenerate and not flags[1].truncated
    with pytest.raises(AlignlabError):
        flag_outputs(PROSE[:2], finished=[True])
    with pytest.raises(AlignlabError):
        DegenerateConfig(trigram_ratio=0)
