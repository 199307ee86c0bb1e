"""Progress output in a log file (not a terminal): stage lines and a line every few minutes, no bars."""

import io
import re

import pytest

from alignlab.progress import EVERY_S, is_terminal, progress, progress_bar, stage


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_stage_prints_start_and_end_lines_when_not_a_terminal():
    log, clock = io.StringIO(), FakeClock()
    with stage("extract", stream=log, clock=clock):
        clock.now += 12.34
    lines = log.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] stage extract: started", lines[0])
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] stage extract: done in 12\.3 s", lines[1])


def test_failed_stage_says_so_and_reraises():
    log, clock = io.StringIO(), FakeClock()
    with pytest.raises(KeyError), stage("select", stream=log, clock=clock):
        clock.now += 300
        raise KeyError("x")
    assert log.getvalue().splitlines()[-1].endswith("stage select: failed after 5.0 min")


def test_long_loop_prints_a_line_every_interval_and_short_loop_none():
    log, clock = io.StringIO(), FakeClock()
    seen = []
    for i in progress(range(10), "greedy replies", unit="prompt", stream=log, clock=clock):
        seen.append(i)
        clock.now += 50  # 50 s per item: a line once 120 s have passed, i.e. after items 3, 6 and 9
    assert seen == list(range(10))  # every item still comes through, in order
    lines = log.getvalue().splitlines()
    assert EVERY_S == 120
    assert [re.search(r": (\d+)/10 prompt", ln).group(1) for ln in lines] == ["3", "6", "9"]
    assert lines[0].endswith("after 2.5 min, about 5.8 min left")  # 150 s for 3 items -> 350 s for 7 more
    short = io.StringIO()
    for _ in progress(range(5), "fast", stream=short, clock=FakeClock()):
        pass
    assert short.getvalue() == ""


def test_terminal_gets_a_bar_and_no_stage_lines():
    tty = Tty()
    assert is_terminal(tty) and not is_terminal(io.StringIO())
    with stage("data", stream=tty):
        for _ in progress(range(3), "bar test", stream=tty):
            pass
    out = tty.getvalue()
    assert "stage" not in out and "bar test" in out and "\r" in out  # tqdm's carriage-return bar


def test_disabled_and_unknown_total():
    log, clock = io.StringIO(), FakeClock()
    with progress_bar(None, "stream", stream=log, clock=clock, enabled=False) as update:
        clock.now += 1e4
        update(5)
    assert log.getvalue() == ""
    with progress_bar(None, "stream", unit="tok", stream=log, clock=clock) as update:
        clock.now += 200
        update(5)
    assert re.search(r"stream: 5 tok after 3\.3 min$", log.getvalue().strip())
