"""Configuration of ``alignlab refusal study`` (issue 16): what is generated, swept and tested.

The docstring under each field is its ``--help`` text. ``--quick`` only changes defaults the user did not
set (fewer held-out prompts and sweep points); generation for the verdicts keeps 128 new tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from alignlab.config import check_finite
from alignlab.errors import AlignlabError

MIN_VERDICT_TOKENS = 128
"""Issue 16: generation for the verdicts uses >= 128 new tokens (disclaimers can come late, heretic #365)."""


@dataclass(frozen=True)
class StudyConfig:
    max_new_tokens: int = MIN_VERDICT_TOKENS
    """Greedy new tokens per judged response (the harmful test generations behind every verdict)."""
    allow_short: bool = False
    """Allow --max-new-tokens below 128 (for smoke tests; the verdicts then read short replies)."""
    aux_tokens: int = 64
    """New tokens for generations that are not judged: the responses behind the response-contrast directions
    and the base model's harmless completions that CE is measured on."""
    n_response: int = 64
    """Harmful and harmless TRAIN prompts whose responses give the response-contrast directions."""
    sweep: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    """Multiples of the natural coefficient swept for single-layer and every-layer subtraction of c·r
    (1 is always added: claim 3 compares at the natural coefficient)."""
    alpha: float = 0.05
    """Significance level of the paired tests (McNemar on refusal and degenerate flags, sign test on KL)."""
    equivalence_margin: float = 0.05
    """Weight edit vs hooks: largest refusal-rate difference still called equal (with no significant test)."""
    judge: Literal["rd", "broad"] = "rd"
    """Substring refusal judge preset."""
    gen_batch_size: int = 64
    """Prompts per batch in the study's generations and measurements (selection uses --batch-size); 64 as in
    `refusal run`'s evaluation (rows that finish leave the batch; on 2 CPU cores 64 rows decode faster per token
    than 32)."""

    def __post_init__(self) -> None:
        check_finite(self, "alpha", "equivalence_margin")
        if self.max_new_tokens < MIN_VERDICT_TOKENS and not self.allow_short:
            raise AlignlabError(
                f"--max-new-tokens below {MIN_VERDICT_TOKENS} misses late disclaimers; "
                "pass --allow-short to accept"
            )
        if min(self.max_new_tokens, self.aux_tokens, self.n_response, self.gen_batch_size) < 1:
            raise AlignlabError(
                "--max-new-tokens, --aux-tokens, --n-response and --gen-batch-size must be >= 1"
            )
        if not self.sweep or not all(math.isfinite(c) and c > 0 for c in self.sweep):
            raise AlignlabError("--sweep needs positive, finite multiples of the natural coefficient")
        if not 0 < self.alpha < 1 or not 0 <= self.equivalence_margin < 1:
            raise AlignlabError("--alpha must be in (0, 1) and --equivalence-margin in [0, 1)")
        if self.judge not in ("rd", "broad"):
            raise AlignlabError("--judge must be rd or broad")

    @property
    def coefficients(self) -> tuple[float, ...]:
        """The sweep with the natural coefficient 1 included, sorted."""
        return tuple(sorted({float(c) for c in self.sweep} | {1.0}))


QUICK_STUDY: dict[str, Any] = {"n_response": 16, "aux_tokens": 48, "sweep": (2.0, 4.0)}
"""--quick defaults for StudyConfig fields the user left unset."""
QUICK_PROMPTS: dict[str, Any] = {"n_test_harmful": 20, "n_test_harmless": 24}
"""--quick defaults for PromptConfig fields the user left unset (the default keeps 100 + 100)."""


def unset_defaults(preset: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The preset's values for the fields not in ``given`` (the options the user typed)."""
    return {name: value for name, value in preset.items() if given.get(name) is None}
