"""Celery task events for the runs the delivery engine delivers, so Flower sees them.

The engine takes run messages off the Celery consumer (tasks.engine), so Celery's own
request machinery never sends their events. This sends the same ones, through Celery's
documented event API (``app.events.Dispatcher``) under the worker's node name, for each
attempt: ``task-received`` when its message arrives, ``task-started`` when it is claimed,
then ``task-succeeded``, ``task-retried`` or ``task-failed`` with its ``runtime`` when its
outcome is recorded. Their task id is the invocation id (the message's). So Flower's
task list, its per-worker counters and ``celery events`` show Cronbeat's work. Events
are buffered and published together once per engine pass (:meth:`RunEvents.flush`, a
``task.multi`` message, as Celery's own worker batches them), not one round trip each.

They are sent only while the worker's events are on (``-E``, or Flower's
``enable_events``), as for any Celery task: the worker's own event dispatcher (a
documented attribute of the consumer) says so, and says which groups are wanted. A
broker that cannot take an event loses that event, never a run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from app.enums import InvocationStatus
from app.firing.runs import RunOutcome
from messaging.config import RUN_TASK

log = logging.getLogger(__name__)

#: Events buffered before a publish even without a flush (a long pass).
BUFFER_LIMIT = 1000


class RunEvents:
    """Sends one worker's run events; safe to call from any thread.

    Args:
        app: the worker's Celery app.
        hostname: the worker's node name (events are counted for it).
        source: returns the worker's own event dispatcher (None before it exists):
            its ``enabled`` and ``groups`` decide whether an event goes out.
    """

    def __init__(self, app: Celery, hostname: str, source: Callable[[], Any]) -> None:
        self._app = app
        self._hostname = hostname
        self._source = source
        self._lock = threading.Lock()
        self._dispatcher: Any = None

    @property
    def enabled(self) -> bool:
        source = self._source()
        if source is None or not source.enabled:
            return False
        groups = getattr(source, "groups", None)
        return not groups or "task" in groups

    def received(self, task_id: str, args: tuple[str, ...]) -> None:
        self._send("task-received", uuid=task_id, name=RUN_TASK, args=repr(args),
                   kwargs="{}", retries=0, root_id=task_id, parent_id=None)

    def started(self, task_id: str) -> None:
        self._send("task-started", uuid=task_id)

    def succeeded(self, task_id: str, runtime_s: float, status: str) -> None:
        self._send("task-succeeded", uuid=task_id, result=repr(status), runtime=runtime_s)

    def retried(self, task_id: str, error: str) -> None:
        self._send("task-retried", uuid=task_id, exception=error, traceback="")

    def failed(self, task_id: str, runtime_s: float, error: str) -> None:
        self._send("task-failed", uuid=task_id, exception=error, traceback="",
                   runtime=runtime_s)

    def flush(self) -> None:
        """Publish the events buffered since the last flush (the engine's pass ends)."""
        with self._lock:
            if self._dispatcher is None:
                return
            try:
                self._dispatcher.flush()
            except (BrokerError, RedisError, OSError) as exc:
                log.debug("run events: events could not be sent (%s)", type(exc).__name__,
                          extra={"action": "run.event_failed"})
                self._drop()

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._drop()

    def _send(self, type_: str, **fields: Any) -> None:
        if not self.enabled:
            return
        with self._lock:
            try:
                if self._dispatcher is None:
                    self._dispatcher = self._app.events.Dispatcher(
                        connection=self._app.connection_for_write(), hostname=self._hostname,
                        enabled=True, buffer_while_offline=False, buffer_group={"task"},
                        buffer_limit=BUFFER_LIMIT)
                self._dispatcher.send(type_, **fields)
            except (BrokerError, RedisError, OSError) as exc:
                # An event is worth less than the time to retry it: dropped, and the
                # next one starts on a fresh connection.
                log.debug("run events: an event could not be sent (%s)", type(exc).__name__,
                          extra={"action": "run.event_failed"})
                self._drop()

    def _drop(self) -> None:
        if self._dispatcher is not None:
            dispatcher, self._dispatcher = self._dispatcher, None
            try:
                dispatcher.close()
                dispatcher.connection.release()
            except Exception as exc:  # a dead connection's close may fail any way
                log.debug("run events: closing failed (%s)", type(exc).__name__)


def report_outcome(events: RunEvents, task_id: str, outcome: RunOutcome, runtime_s: float,
                   error: str | None) -> None:
    """The task event of one call of the run path: succeeded, retried or failed."""
    status = outcome.status
    if status is InvocationStatus.PENDING:
        events.retried(task_id, error or "transient failure, retried")
    elif status is InvocationStatus.FAILED:
        events.failed(task_id, runtime_s, error or "the run failed")
    elif status is None and outcome.attempt is not None:
        events.failed(task_id, runtime_s, "the outcome was not recorded: the attempt no"
                      " longer held its run")
    else:
        # Recorded (succeeded, cancelled, skipped), or nothing to do (a duplicate).
        events.succeeded(task_id, runtime_s, status.value if status else "nothing to do")
