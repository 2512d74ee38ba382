"""Publishing run_trigger messages in bulk, after the invocations were committed.

``apply_async`` in a loop costs ~0.4 ms a message: one Redis round trip and a fresh
client object per message, plus building the Celery message from scratch. A tick may
publish tens of thousands, so the batch path builds one Celery protocol-2 message with
``amqp.as_task_v2`` as a template, varies only what differs per invocation (task id,
argument, correlation id), and sends them over one kombu producer inside
``Producer.batch()``, which pipelines the LPUSHes to Redis (kombu 5.7+). The messages
are ordinary ``run_trigger`` tasks that any Celery worker consumes.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

from celery import Celery

from messaging.config import (
    ALERT_QUEUE,
    ALERT_TASK,
    DISPATCH_QUEUE,
    DISPATCH_TASK,
    RUN_QUEUE,
    RUN_TASK,
)
from messaging.connect import ensure_connected

#: Redis commands buffered per pipeline flush: large enough to amortise the round trip,
#: small enough that one flush stays a few hundred kilobytes.
PIPELINE_SIZE = 1000


#: What names a run: its invocation id, or the id with its scheduled_for (the full key,
#: which lets the worker's statements read one day partition of the history).
Run = uuid.UUID | str | tuple[uuid.UUID | str, dt.datetime]


def run_args(run: Run) -> tuple[str, ...]:
    """The arguments of ``run``'s message: ``(id,)`` or ``(id, scheduled_for)``."""
    if isinstance(run, tuple):
        invocation_id, scheduled_for = run
        return str(invocation_id), scheduled_for.isoformat()
    return (str(run),)


def publish_runs(
    app: Celery, runs: Iterable[Run], *, countdown_s: float | None = None,
    eta: dt.datetime | None = None,
) -> int:
    """Publish one ``run_trigger(invocation_id[, scheduled_for])`` message per run.

    The message's task id is the invocation id, so Flower and the worker logs show the
    invocation. ``countdown_s`` or ``eta`` (an aware instant) hold the messages in the
    worker until then. Returns the number of messages published.

    Raises:
        kombu / redis errors: the broker is unreachable. Messages not yet flushed are
        dropped, nothing is marked published, and the sweep publishes them later.
    """
    amqp = app.amqp
    template_id = str(uuid.uuid4())
    headers, properties, _, _ = amqp.as_task_v2(
        template_id, RUN_TASK, args=(template_id,), kwargs={}, countdown=countdown_s,
        eta=eta,
    )
    serializer = app.conf.task_serializer
    count = 0
    with app.producer_or_acquire() as producer:
        ensure_connected(producer.connection)
        with producer.batch(max_size=PIPELINE_SIZE):
            for run in runs:
                args = run_args(run)
                text_id = args[0]
                producer.publish(
                    (args, {}, {"callbacks": None, "errbacks": None, "chain": None,
                                "chord": None}),
                    # The anonymous exchange with the queue name as routing key, as Celery
                    # itself publishes to a direct exchange: no binding lookup per message.
                    exchange="",
                    routing_key=RUN_QUEUE,
                    serializer=serializer,
                    headers={**headers, "id": text_id, "argsrepr": repr(args)},
                    delivery_mode=2,
                    retry=False,
                    declare=[],
                    **{**properties, "correlation_id": text_id},
                )
                count += 1
    return count


def kick_tick(app: Celery, countdown_s: float | None = None) -> None:
    """Send one dispatcher tick now, or in ``countdown_s`` (after an activation, so
    anything due runs at once; after a save of a trigger due before the next tick).

    Raises:
        kombu / redis errors: the broker is unreachable; beat's next tick does the same.
    """
    app.send_task(DISPATCH_TASK, queue=DISPATCH_QUEUE, countdown=countdown_s)


def publish_alerts(
    app: Celery, alert_ids: Iterable[uuid.UUID], *, countdown_s: float | None = None
) -> int:
    """Publish one ``deliver_alert(alert_id)`` message per alert; returns how many.

    Alerts are few (one per state change of a trigger), so plain ``send_task`` does.

    Raises:
        kombu / redis errors: the broker is unreachable; the alert watchdog publishes
        what was not published once it is due.
    """
    count = 0
    for alert_id in alert_ids:
        app.send_task(ALERT_TASK, args=(str(alert_id),), queue=ALERT_QUEUE,
                      task_id=str(alert_id), countdown=countdown_s)
        count += 1
    return count
