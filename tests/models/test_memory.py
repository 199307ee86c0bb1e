import pytest

from alignlab.models.memory import release_memory


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_release_memory_returns_freed_heap_pages_to_the_system():
    if not release_memory():
        pytest.skip("not glibc: malloc_trim unavailable")
    before = _rss_mb()
    chunks = [bytearray(100_000) for _ in range(2000)]  # 200 MB of heap (below the mmap threshold), pages touched
    grown = _rss_mb()
    survivors = chunks[::10]  # every tenth stays: the freed blocks are holes, not the top of the heap
    del chunks
    kept = _rss_mb()  # glibc keeps the freed block inside its heap
    release_memory()
    after = _rss_mb()
    assert grown - before > 150
    assert kept - grown > -20  # free() alone gave back (almost) nothing
    assert kept - after > 100, (before, grown, kept, after)
    assert len(survivors) == 200
