"""The threads pool's stand-in for prefork's hard time limit: a task that overruns ends
the process.

Under prefork, a child stuck past ``time_limit`` is killed and replaced. A thread cannot
be killed, and every bound of an attempt is already its own (libcurl's total timeout, the
publish timeouts of tasks.run, PostgreSQL's statement_timeout from tasks.runtime), so a
run past all of them is a bug or a C call that ignores them. The watch then exits the
worker process, as a crash would: its supervisor (the Procfile's runner, systemd, a
container restart policy) starts a fresh one, the leases of its running attempts run out
and the dispatcher's sweep runs them again, as after any killed worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from celery.signals import task_postrun, task_prerun

log = logging.getLogger(__name__)

#: The exit status of a worker ended by the watch (EX_SOFTWARE).
OVERRUN_EXIT_STATUS = 70
CHECK_EVERY_S = 5.0
#: How long a run whose outcome could not be recorded is kept from the orphan take-back
#: (tasks.reaper): past the longest lease, the sweep has decided it.
UNRECORDED_KEEP_S = 7200.0


class OverrunWatch:
    """Tracks when each running task of ``task_name`` began; exits past ``limit_s``."""

    def __init__(self, task_name: str, limit_s: float, exit: Any = os._exit) -> None:
        self.task_name = task_name
        self.limit_s = limit_s
        self._exit = exit
        self._started: dict[str, float] = {}
        #: Runs delivered whose outcome could not be recorded, with when: their leases
        #: decide what happens to them, not the orphan take-back (tasks.reaper).
        self._unrecorded: dict[str, float] = {}
        self._lock = threading.Lock()

    def begin(self, task_id: str) -> None:
        with self._lock:
            self._started[task_id] = time.monotonic()

    def end(self, task_id: str) -> None:
        with self._lock:
            self._started.pop(task_id, None)

    def unrecorded(self, task_ids: Sequence[str]) -> None:
        """These ran, and their outcome could not be recorded."""
        now = time.monotonic()
        with self._lock:
            self._unrecorded.update(dict.fromkeys(task_ids, now))

    def held(self) -> set[str]:
        """The ids of the tasks running now, and of those that ran without their outcome
        recorded within UNRECORDED_KEEP_S (their leases have run out since)."""
        now = time.monotonic()
        with self._lock:
            for task_id, at in list(self._unrecorded.items()):
                if now - at > UNRECORDED_KEEP_S:
                    del self._unrecorded[task_id]
            return set(self._started) | set(self._unrecorded)

    def overrun(self, now: float | None = None) -> list[str]:
        """The ids of tasks running longer than the limit."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return [task_id for task_id, at in self._started.items()
                    if now - at > self.limit_s]

    def check(self) -> None:
        late = self.overrun()
        if late:
            log.critical(
                "worker: %d task(s) ran past %g s; exiting so a fresh worker takes over",
                len(late), self.limit_s,
                extra={"action": "worker.overrun", "task_ids": late[:10]},
            )
            logging.shutdown()
            self._exit(OVERRUN_EXIT_STATUS)

    def start(self, connect_signals: bool = True) -> None:
        """Check in a daemon thread from now on; with ``connect_signals``, track the
        task's runs through Celery's task signals (else the caller calls begin/end)."""
        if connect_signals:
            task_prerun.connect(self._on_prerun, weak=False)
            task_postrun.connect(self._on_postrun, weak=False)

        def loop() -> None:
            while True:
                time.sleep(CHECK_EVERY_S)
                self.check()

        threading.Thread(target=loop, name="overrun-watch", daemon=True).start()

    def _on_prerun(self, task_id: str, task: Any, **_: Any) -> None:
        if task.name == self.task_name:
            self.begin(task_id)

    def _on_postrun(self, task_id: str, task: Any, **_: Any) -> None:
        if task.name == self.task_name:
            self.end(task_id)
