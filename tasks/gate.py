"""The worker's deployment gate: consume Cronbeat's queues only while this deployment is active.

A consumer bootstep. At start (before the consumer's first ``consume``) a process whose
deployment is not active cancels its Cronbeat queues, so a standby never receives a
message. Then, every :data:`APPLY_INTERVAL_S` on the worker's own event loop (where
Celery's remote-control commands run too, so the consumer is never touched from another
thread), it makes what the consumer consumes match the role that :mod:`app.deploys.presence`
keeps current: it starts consuming the moment its deployment is activated, and stops
the moment another one is. The fence (:mod:`app.deploys.deploy`) guards every claim regardless,
so a message received in between is handed back, never run by the wrong deployment.

The heartbeat row says whether the consumer really consumes: an active worker that
consumes none of its queues for :data:`NOT_CONSUMING_GRACE_S`, or whose event loop has
not run for :data:`LOOP_STALL_S`, reports a problem, and ``cronbeat health`` fails.
"""

from __future__ import annotations

import logging
import time
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


class _Gate:
    """The process-wide part: the queues, the presence, and what the loop last saw."""

    def __init__(self, queues: tuple[str, ...]) -> None:
        self.queues = queues
        self.last_apply: float | None = None
        self.consuming = False
        self.not_consuming_since: float | None = None
        self.presence = Presence(
            get_settings(), processes.kind_for_queues(queues), queues, self.status
        )

    def status(self) -> tuple[bool | None, str | None]:
        """(consuming, problem), for the heartbeat thread."""
        if self.last_apply is None:
            return False, None
        stalled_s = time.monotonic() - self.last_apply
        if stalled_s > LOOP_STALL_S:
            return self.consuming, f"the worker's event loop has not run for {stalled_s:.0f} s"
        if self.not_consuming_since is not None:
            idle_s = time.monotonic() - self.not_consuming_since
            if idle_s > NOT_CONSUMING_GRACE_S:
                return False, (f"its deployment is active but it has consumed none of "
                               f"{', '.join(self.queues)} for {idle_s:.0f} s")
        return self.consuming, None


_gate: _Gate | None = None


def is_active() -> bool:
    """Whether this worker's deployment is the active one (False before the gate starts)."""
    return _gate is not None and _gate.presence.active


class DeploymentGate(bootsteps.StartStopStep):
    """Consumer bootstep: Cronbeat's queues follow this process's deployment role."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    label = "CronbeatDeploymentGate"

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._timer: Any = None

    def start(self, c: Any) -> None:
        global _gate
        if _gate is None:
            # Captured once: later starts (after a broker reconnect) see only what the
            # gate left selected.
            queues = tuple(q for q in c.app.amqp.queues.consume_from if q in CRONBEAT_QUEUES)
            _gate = _Gate(queues)
            _gate.presence.start()
        if not _gate.presence.active:
            # Before the consumer's first consume(): a standby receives nothing at all.
            for queue in _gate.queues:
                c.cancel_task_queue(queue)
        self._timer = c.timer.call_repeatedly(APPLY_INTERVAL_S, self._apply, (c,))

    def stop(self, c: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def shutdown(self, c: Any) -> None:
        global _gate
        self.stop(c)
        if _gate is not None:
            _gate.presence.stop()
            _gate = None

    def _apply(self, c: Any) -> None:
        gate = _gate
        consumer = c.task_consumer
        if gate is None or consumer is None:
            return
        want = gate.presence.active
        changed = False
        try:
            for queue in gate.queues:
                consuming = consumer.consuming_from(queue)
                if want and not consuming:
                    c.add_task_queue(queue)
                    changed = True
                elif not want and consuming:
                    c.cancel_task_queue(queue)
                    changed = True
        except Exception as exc:  # the broker went away: the consumer restarts, we retry
            log.warning("could not change what this worker consumes (%s)", type(exc).__name__,
                        extra={"action": "deploy.consume_failed"})
        now = time.monotonic()
        gate.last_apply = now
        gate.consuming = bool(gate.queues) and all(
            consumer.consuming_from(queue) for queue in gate.queues
        )
        if want and not gate.consuming:
            gate.not_consuming_since = gate.not_consuming_since or now
        else:
            gate.not_consuming_since = None
        if changed:
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
    """Add the gate to ``app``'s worker consumer (the worker entry point calls this)."""
    app.steps["consumer"].add(DeploymentGate)
