"""The delivery engine's threads: each takes the next job from one queue."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tasks.engine")


class DeliveryThreads:
    """The delivery threads: each takes the next job from one queue.

    ``concurrent.futures`` would build a future (and its condition) per job, which
    nobody here waits on: every job reports through the engine's events.
    """

    def __init__(self, count: int) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = (
            queue.SimpleQueue())
        self._threads = [threading.Thread(target=self._work, name=f"delivery-{n}", daemon=True)
                         for n in range(count)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Callable[..., None], *args: Any) -> None:
        self._jobs.put((job, args))

    def stop(self) -> None:
        """Let each thread end after the jobs queued before this."""
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, args = item
            try:
                job(*args)
            except Exception:  # a bug in a job: the thread goes on with the next
                log.exception("run engine: a delivery thread's job failed",
                              extra={"action": "run.engine_job_failed"})
