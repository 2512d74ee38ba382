"""What the delivery engine's thread receives, and how it gathers one pass's worth."""

from __future__ import annotations

import dataclasses
import queue
import time
from typing import Any

from app.delivery.send import DeliveryResult
from app.firing.runs import StartedRun
from tasks.run_messages import RunMessage


@dataclasses.dataclass(frozen=True)
class Delivered:
    """A batch-claimed attempt's delivery came back."""

    message: RunMessage
    run: StartedRun
    result: DeliveryResult
    #: When its delivery began (time.monotonic()), for the task event's runtime.
    began: float


class Done:
    """A single-path run's thread is free again."""


class Wake:
    """Nothing to do but a pass (a retry or a take is due, or the engine is stopping)."""


Event = RunMessage | Delivered | Done | Wake


def gather(events: queue.SimpleQueue[Any], wait_s: float | None, window_s: float,
           most: int) -> list[Event] | None:
    """The next pass's events: the first one (a :class:`Wake` after ``wait_s``), then
    whatever arrives within ``window_s`` of it, at most ``most``; None to stop.

    Gathering for a few milliseconds makes one claim and one finish of many runs, for a
    fraction of the statements, commits and Python per run.
    """
    try:
        first = events.get(timeout=wait_s)
    except queue.Empty:
        first = Wake()
    if first is None:
        return None
    gathered = [first]
    window_ends = time.monotonic() + window_s
    while len(gathered) < most:
        left_s = window_ends - time.monotonic()
        try:
            event = events.get(timeout=left_s) if left_s > 0 else events.get_nowait()
        except queue.Empty:
            break
        if event is None:
            events.put(None)  # stop at the next call
            break
        gathered.append(event)
    return gathered
