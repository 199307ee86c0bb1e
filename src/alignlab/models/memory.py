"""Give freed memory back to the operating system between pipeline stages.

glibc keeps freed heap memory in its arenas; after a stage's activations are freed, RSS stays at the stage's
peak and the next stage's allocations stack on top of it. ``malloc_trim(0)`` returns the free pages (on other C
libraries this is a no-op). Measured on `refusal run` in ``bench/refusal_memory.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.cache
def _trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_memory() -> bool:
    """Collect garbage and trim the C heap. Returns whether the heap could be trimmed."""
    gc.collect()
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True


__all__ = ["release_memory"]
