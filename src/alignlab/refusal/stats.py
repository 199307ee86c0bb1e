"""Rates with Wilson 95 % intervals and the exact McNemar test (spec §3.5).

Wilson (1927) score interval for k successes of n, z = 1.96:
centre = (p + z²/2n) / (1 + z²/n), half-width = z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n).
McNemar's exact test compares paired binary outcomes (the same prompts before and after an edit): under
H0 the discordant pairs split Binomial(b + c, 1/2); the two-sided p-value doubles the smaller tail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from alignlab.errors import AlignlabError

Z95 = 1.96
LOW_N = 10  # spec §3.5: categories with n < 10 are flagged low_n


@dataclass(frozen=True)
class Rate:
    k: int
    n: int
    low: float
    high: float

    @property
    def rate(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @property
    def low_n(self) -> bool:
        return self.n < LOW_N

    def __str__(self) -> str:
        return f"{self.k}/{self.n} = {self.rate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k of n; (0, 1) when n = 0."""
    if n < 0 or k < 0 or k > n:
        raise AlignlabError(f"need 0 <= k <= n for a rate (got k={k}, n={n})")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact at the edges (no float residue)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def rate(k: int, n: int) -> Rate:
    low, high = wilson(k, n)
    return Rate(k, n, low, high)


def rate_of(flags: Sequence[bool]) -> Rate:
    return rate(sum(bool(f) for f in flags), len(flags))


def mcnemar_exact(before: Sequence[bool], after: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value for paired outcomes (1.0 when there are no discordant pairs)."""
    if len(before) != len(after):
        raise AlignlabError(f"McNemar needs paired outcomes (got {len(before)} and {len(after)})")
    b = sum(1 for x, y in zip(before, after) if x and not y)
    c = sum(1 for x, y in zip(before, after) if y and not x)
    return mcnemar_exact_counts(b, c)


def mcnemar_exact_counts(b: int, c: int) -> float:
    """p-value from the discordant counts b (yes -> no) and c (no -> yes)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)
