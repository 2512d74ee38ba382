"""The threads pool's stand-in for the hard time limit: an overrunning task ends the process."""

from __future__ import annotations

import time

from tasks.overrun import OVERRUN_EXIT_STATUS, OverrunWatch


def test_a_task_past_the_limit_exits_the_process_and_one_within_it_does_not() -> None:
    exits: list[int] = []
    watch = OverrunWatch("cronbeat.run_trigger", limit_s=10.0, exit=exits.append)
    watch.begin("a")
    watch.begin("b")
    now = time.monotonic()
    assert watch.overrun(now + 5) == []
    assert watch.overrun(now + 11) == ["a", "b"]
    watch.end("a")
    assert watch.overrun(now + 11) == ["b"]
    watch.check()
    assert exits == []  # b began a moment ago: not past its limit yet
    watch._started["b"] -= 11
    watch.check()
    assert exits == [OVERRUN_EXIT_STATUS]
