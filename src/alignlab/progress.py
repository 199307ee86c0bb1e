"""Progress that reads well both on a terminal and in a log file.

On a terminal: tqdm bars, as before. When the stream is not a terminal (a log file, a pipe, CI), bars
would print nothing useful for many minutes or fill the log with carriage returns, so instead:
``stage`` prints one line when a stage starts and one when it ends, and ``progress`` / ``progress_bar``
print one line every ``every_s`` seconds (default 2 minutes) inside long loops; short loops print nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

T = TypeVar("T")
EVERY_S = 120.0
"""Seconds between progress lines in a log (issue 13 §5: a line every few minutes)."""


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _line(stream: TextIO, text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=stream, flush=True)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


@contextmanager
def progress_bar(total: int | None, desc: str, unit: str = "it", *, enabled: bool = True,
                 stream: TextIO | None = None, every_s: float = EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> Iterator[Callable[[int], None]]:
    """Yield ``update(n)``: a tqdm bar on a terminal, else a line every ``every_s`` seconds."""
    stream = stream if stream is not None else sys.stderr  # looked up per call: tests and tools swap stderr
    if not enabled:
        yield lambda n: None
        return
    if is_terminal(stream):
        from tqdm.auto import tqdm

        with tqdm(total=total, desc=desc, unit=unit, file=stream, leave=False) as bar:
            yield bar.update
        return
    start = last = clock()
    done = 0

    def update(n: int = 1) -> None:
        nonlocal done, last
        done += n
        now = clock()
        if now - last < every_s:
            return
        last = now
        elapsed = now - start
        of = f"/{total} {unit}" if total else f" {unit}"
        eta = f", about {_duration(elapsed * (total - done) / done)} left" if total and done else ""
        _line(stream, f"{desc}: {done}{of} after {_duration(elapsed)}{eta}")

    yield update


def progress(items: Iterable[T], desc: str, *, total: int | None = None, unit: str = "it",
             enabled: bool = True, stream: TextIO | None = None, every_s: float = EVERY_S,
             clock: Callable[[], float] = time.monotonic) -> Iterator[T]:
    """Iterate ``items`` with ``progress_bar`` (``total`` defaults to ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(total, desc, unit, enabled=enabled, stream=stream, every_s=every_s, clock=clock) as update:
        for item in items:
            yield item
            update(1)


@contextmanager
def stage(name: str, *, stream: TextIO | None = None,
          clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """One line at the start and one at the end (or failure) of a stage when ``stream`` is not a terminal."""
    stream = stream if stream is not None else sys.stderr
    if is_terminal(stream):
        yield
        return
    _line(stream, f"stage {name}: started")
    start = clock()
    try:
        yield
    except BaseException:
        _line(stream, f"stage {name}: failed after {_duration(clock() - start)}")
        raise
    _line(stream, f"stage {name}: done in {_duration(clock() - start)}")
