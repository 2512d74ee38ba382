"""The worker's deployment gate: consume Cronbeat's queues only while this deployment is active.

Three parts, each on Celery's documented extension points:

* :func:`capture`, at ``worker_init``: the Cronbeat queues this worker was started with
  (``-Q``). ``cronbeat.runs`` is handed to the delivery engine (:mod:`tasks.engine`),
  which consumes it on a connection of its own, so the Celery consumer is told not to
  (``Queues.deselect``).
* :class:`WorkerPresence`, a worker bootstep: the process's registry row and role
  (:mod:`app.deploys.presence`), started before anything consumes and stopped after
  everything else, so a process is never seen dead while its deliveries still run.
* :class:`DeploymentGate`, a consumer bootstep: at start (before the consumer's first
  ``consume``) a process whose deployment is not active cancels its Celery queues, so a
  standby never receives a message; then, every :data:`APPLY_INTERVAL_S` on the
  worker's event loop, it makes what the consumer consumes match the role: it starts
  consuming the moment its deployment is activated, and stops the moment another one
  is. The engine follows the same role (:func:`is_active`). The fence
  (:mod:`app.deploys.deploy`) guards every claim regardless, so a message received in
  between is handed back, never run by the wrong deployment.

The heartbeat row says whether the worker really consumes: an active worker that
consumes none of its queues for :data:`NOT_CONSUMING_GRACE_S`, or whose event loop has
not run for :data:`LOOP_STALL_S`, reports a problem, and ``cronbeat health`` fails.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery import bootsteps

from app.deploys import processes
from app.deploys.presence import Presence
from app.enums import ProcessRole
from tasks.celery_app import ALERT_QUEUE, DISPATCH_QUEUE, RUN_QUEUE
from tasks.runtime import get_settings

log = logging.getLogger(__name__)

APPLY_INTERVAL_S = 0.25
NOT_CONSUMING_GRACE_S = 10.0
LOOP_STALL_S = 30.0
CRONBEAT_QUEUES = (DISPATCH_QUEUE, RUN_QUEUE, ALERT_QUEUE)
#: Queues a worker consumes on connections of its own (tasks.run_consumer), not through
#: the Celery consumer: runs (the engine) and alerts. kombu 5.7 fails to restore a
#: message the Celery consumer holds unacknowledged when the broker goes, and Celery
#: then ends the process; these consumers survive it.
OWN_CONSUMERS = (RUN_QUEUE, ALERT_QUEUE)


class _Gate:
    """The process-wide part: the queues, the presence, and what the loop last saw."""

    def __init__(self, queues: tuple[str, ...]) -> None:
        #: Every Cronbeat queue this worker consumes, the engine's included.
        self.queues = queues
        #: The queues the Celery consumer consumes (all but the engine's).
        self.celery_queues = tuple(q for q in queues if q not in OWN_CONSUMERS)
        self.last_apply: float | None = None
        self.celery_consuming = False
        self.not_consuming_since: float | None = None
        #: Whether the engine consumes its queue now (set by tasks.engine).
        self.own_consuming: list[Callable[[], bool]] = []
        self.presence = Presence(
            get_settings(), processes.kind_for_queues(queues), queues, self.status
        )

    @property
    def consuming(self) -> bool:
        return (bool(self.queues) and self.celery_consuming
                and all(consuming() for consuming in self.own_consuming))

    def status(self) -> tuple[bool | None, str | None]:
        """(consuming, problem), for the heartbeat thread."""
        if self.last_apply is None:
            return False, None
        stalled_s = time.monotonic() - self.last_apply
        if stalled_s > LOOP_STALL_S:
            return self.consuming, f"the worker's event loop has not run for {stalled_s:.0f} s"
        consuming = self.consuming
        if self.presence.active and not consuming:
            self.not_consuming_since = self.not_consuming_since or time.monotonic()
            idle_s = time.monotonic() - self.not_consuming_since
            if idle_s > NOT_CONSUMING_GRACE_S:
                return False, (f"its deployment is active but it has consumed none of "
                               f"{', '.join(self.queues)} for {idle_s:.0f} s")
        else:
            self.not_consuming_since = None
        return consuming, None


_gate: _Gate | None = None


def capture(app: Any) -> tuple[str, ...]:
    """Record the Cronbeat queues this worker consumes; the Celery consumer leaves
    ``cronbeat.runs`` to the engine. Returns the queues (empty: not a Cronbeat worker)."""
    global _gate
    queues = tuple(q for q in app.amqp.queues.consume_from if q in CRONBEAT_QUEUES)
    for queue in OWN_CONSUMERS:
        if queue in queues:
            app.amqp.queues.deselect(queue)
    _gate = _Gate(queues) if queues else None
    return queues


def is_active() -> bool:
    """Whether this worker's deployment is the active one (False before the gate starts)."""
    return _gate is not None and _gate.presence.active


def consumes(queue: str) -> bool:
    """Whether this worker was started to consume ``queue`` (whatever its role now)."""
    return _gate is not None and queue in _gate.queues


def process_id() -> uuid.UUID | None:
    """This worker's registry id (the leases it takes name it), None outside a worker."""
    return None if _gate is None else _gate.presence.id


def watch_consumer(consuming: Callable[[], bool]) -> None:
    """Count a consumer of this worker's own (the engine's, the alerts') in the worker's
    consuming (for the heartbeat and health)."""
    if _gate is not None:
        _gate.own_consuming.append(consuming)


class WorkerPresence(bootsteps.StartStopStep):
    """Worker bootstep: the registry row and role, for the whole life of the worker."""

    label = "CronbeatPresence"

    def include_if(self, w: Any) -> bool:
        return _gate is not None

    def start(self, w: Any) -> None:
        if _gate is not None:
            _gate.presence.start()

    def stop(self, w: Any) -> None:
        # Last: every other step (the engine's deliveries included) has stopped.
        if _gate is not None:
            _gate.presence.stop()

    def terminate(self, w: Any) -> None:
        self.stop(w)


class DeploymentGate(bootsteps.StartStopStep):
    """Consumer bootstep: the Celery consumer's Cronbeat queues follow the role."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    label = "CronbeatDeploymentGate"

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._timer: Any = None
        #: The role whose consuming was last logged (None: none yet).
        self._announced: bool | None = None

    def start(self, c: Any) -> None:
        if _gate is None:
            return
        if not _gate.presence.active:
            # Before the consumer's first consume(): a standby receives nothing at all.
            for queue in _gate.celery_queues:
                c.cancel_task_queue(queue)
        self._timer = c.timer.call_repeatedly(APPLY_INTERVAL_S, self._apply, (c,))

    def stop(self, c: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def shutdown(self, c: Any) -> None:
        self.stop(c)

    def _apply(self, c: Any) -> None:
        gate = _gate
        consumer = c.task_consumer
        if gate is None or consumer is None:
            return
        want = gate.presence.active
        try:
            for queue in gate.celery_queues:
                consuming = consumer.consuming_from(queue)
                if want and not consuming:
                    c.add_task_queue(queue)
                elif not want and consuming:
                    c.cancel_task_queue(queue)
        except Exception as exc:  # the broker went away: the consumer restarts, we retry
            log.warning("could not change what this worker consumes (%s)", type(exc).__name__,
                        extra={"action": "deploy.consume_failed"})
        gate.last_apply = time.monotonic()
        gate.celery_consuming = all(consumer.consuming_from(q) for q in gate.celery_queues)
        if self._announced is None:
            self._announced = want  # as it booted: nothing changed
        if want != self._announced and gate.consuming == want:
            # The engine follows the same role on its own thread: logged once both did.
            self._announced = want
            role = gate.presence.role
            log.warning(
                "%s consuming %s (%s)", "started" if want else "stopped",
                ", ".join(gate.queues), role.value if role else "role unknown",
                extra={"action": "deploy.consuming" if want else "deploy.not_consuming",
                       "queues": list(gate.queues),
                       "role": role.value if isinstance(role, ProcessRole) else None},
            )
            # The registry shows the change now, not at the next heartbeat.
            gate.presence.wake()


def install(app: Any) -> None:
    """Add the gate's steps to ``app``'s worker (the worker entry point calls this)."""
    app.steps["worker"].add(WorkerPresence)
    app.steps["consumer"].add(DeploymentGate)
