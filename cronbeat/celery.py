"""Report your own tasks' real outcome to Cronbeat: one line in your Celery app.

    app = Celery("shop")
    cronbeat.celery.install(app)      # before the app's tasks are defined

Cronbeat calls a task target with ``outcome`` tracking on with a ``cronbeat`` message
header that names the occurrence, says where to report, and carries a token only the
Cronbeat worker that sent the message can check. With the integration installed, each
such task, when it runs:

* first claims its attempt in the broker's Redis (``SET NX``). A message redelivered for
  an attempt that already started (a worker killed mid-task with ``acks_late``, a
  visibility timeout) is refused: the body runs at most once per attempt, and Cronbeat
  runs the next attempt itself;
* reports its start, then its end: success, or the exception's type and message, and
  the duration in seconds. The Cronbeat worker records that as the attempt's outcome
  (a failure is retried with the trigger's backoff).

It works through Celery's documented custom task class (``app.Task``), because a signal
handler cannot keep a task body from running. A task with ``base=`` of its own gets
the same by subclassing :class:`TrackedTask`. Messages without the header (every task
not scheduled by Cronbeat with tracking on) run exactly as before. Reports go on the
broker's Redis, so the worker needs nothing more than its broker.

The worker logs ``cronbeat: outcome reports on`` once at start: how to tell that a
worker has the integration.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery import Celery, Task
from celery.signals import worker_ready

log = logging.getLogger("cronbeat")

#: The header Cronbeat's facts travel in (tasks read them as ``self.request.cronbeat``).
HEADER = "cronbeat"
#: How long the attempt's claim stays in Redis (an attempt is never retried later).
CLAIM_TTL_S = 7 * 86_400
#: A report waits this long in Redis for its Cronbeat worker (it waits for it then).
REPORT_TTL_S = 86_400


def _facts(task: Task) -> dict[str, Any] | None:
    facts = getattr(task.request, HEADER, None)
    if isinstance(facts, dict) and facts.get("report_to") and facts.get("token"):
        return facts
    return None


def _redis(task: Task) -> Any:
    """The broker's Redis client (kombu's Redis transport keeps one per channel)."""
    connection = task.app.connection_for_write()
    return connection, connection.default_channel.client


def _report(client: Any, facts: dict[str, Any], event: str, **fields: Any) -> None:
    body = {"invocation": facts["invocation"], "attempt": facts["attempt"],
            "token": facts["token"], "event": event, **fields}
    key = facts["report_to"]
    pipe = client.pipeline()
    pipe.rpush(key, json.dumps(body))
    pipe.expire(key, REPORT_TTL_S)
    pipe.execute()


class TrackedTask(Task):
    """A task that claims its attempt and reports its outcome when Cronbeat asks."""

    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        facts = _facts(self)
        if facts is None:
            return super().__call__(*args, **kwargs)
        connection, client = _redis(self)
        try:
            claim = f"cronbeat:attempt:{facts['invocation']}:{facts['attempt']}"
            if not client.set(claim, self.request.id or "", nx=True, ex=CLAIM_TTL_S):
                log.warning("cronbeat: attempt %s of %s started already: not run again",
                            facts["attempt"], facts["invocation"])
                return None
            _report(client, facts, "started")
            started = time.monotonic()
            try:
                result = super().__call__(*args, **kwargs)
            except BaseException as exc:
                _report(client, facts, "finished", ok=False,
                        error=f"{type(exc).__name__}: {exc}"[:1000],
                        duration_s=round(time.monotonic() - started, 6))
                raise
            _report(client, facts, "finished", ok=True,
                    duration_s=round(time.monotonic() - started, 6))
            return result
        finally:
            connection.release()


def install(app: Celery) -> None:
    """Make ``app``'s tasks report their outcome to Cronbeat (call it before the tasks
    are defined: it sets the app's task base class)."""
    if not issubclass(app.Task, TrackedTask):
        app.Task = type("CronbeatTask", (TrackedTask, app.Task), {"abstract": True})

    @worker_ready.connect(weak=False)
    def _announce(sender: Any = None, **_: Any) -> None:
        if sender is not None and getattr(sender, "app", None) is app:
            log.warning("cronbeat: outcome reports on")
