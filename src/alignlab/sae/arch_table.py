"""The architecture table and its ``register`` decorator, importing nothing from alignlab.

Architecture modules register themselves here, and ``registry`` imports every architecture module; keeping the
table in this leaf module means any architecture module can be imported first without an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alignlab.sae.base import SAE

REGISTRY: dict[str, type[SAE]] = {}


def register(name: str):
    """Class decorator: ``@register("gated") class GatedSAE(SAE)``."""

    def deco(cls: type[SAE]) -> type[SAE]:
        REGISTRY[name] = cls
        cls.architecture_name = name  # type: ignore[attr-defined]
        return cls

    return deco
