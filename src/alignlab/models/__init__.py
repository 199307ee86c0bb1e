"""Model loading, structural anatomy, hooks and chat formatting.

Imports are lazy so that ``alignlab --help`` does not pay for torch and transformers.
"""

from typing import Any

__all__ = ["LoadedModel", "load_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from alignlab.models import loading

        return getattr(loading, name)
    raise AttributeError(name)
