"""Run configuration of the requirement Monte Carlo; stdlib only so the CLI can build options cheaply."""

from __future__ import annotations

from dataclasses import dataclass

from alignlab.errors import AlignlabError

POSTERIOR_METHODS: tuple[str, ...] = ("quadrature", "is", "pymc")


@dataclass(frozen=True)
class RequirementsConfig:
    """How to run the requirement Monte Carlo."""

    samples: int = 20_000
    """Monte-Carlo samples (the reference's run_standalone.py uses 20 000)."""
    seed: int = 0
    """Seed of the one numpy Generator that feeds every draw."""
    params: str = "besiroglu2024"
    """Scaling-law set (hoffmann2022, besiroglu2024) or a JSON parameter file."""
    posterior: str = "quadrature"
    """No-TAI-yet posterior: quadrature (deterministic density), is (importance sampling) or pymc."""
    is_draws: int = 200_000
    """Prior draws for --posterior is."""

    def __post_init__(self) -> None:
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 10:
            raise AlignlabError(f"--samples must be an integer >= 10, got {self.samples}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise AlignlabError(f"--seed must be a non-negative integer, got {self.seed}")
        if self.posterior not in POSTERIOR_METHODS:
            raise AlignlabError(
                f"unknown --posterior {self.posterior!r}; use one of {', '.join(POSTERIOR_METHODS)}"
            )
