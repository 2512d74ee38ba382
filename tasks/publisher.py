"""Publishing run_trigger messages in bulk, after the invocations were committed.

``apply_async`` in a loop costs ~0.4 ms a message (routing, signature objects, a pool
checkout per call). A tick may publish tens of thousands, so the batch path builds each
Celery protocol-2 message with ``amqp.as_task_v2`` and sends them all over one kombu
producer. They are ordinary ``run_trigger`` tasks any Celery worker consumes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from celery import Celery

from tasks.celery_app import RUN_QUEUE, RUN_TASK


def publish_runs(
    app: Celery, invocation_ids: Iterable[uuid.UUID | str], *, countdown_s: float | None = None
) -> int:
    """Publish one ``run_trigger(invocation_id)`` message per id over one producer.

    The message's task id is the invocation id, so Flower and the worker logs show the
    invocation. Returns the number of messages published.

    Raises:
        kombu / redis errors: the broker is unreachable. Nothing is marked published then,
        and the sweep publishes the invocations again later.
    """
    amqp = app.amqp
    queue = amqp.queues[RUN_QUEUE]
    count = 0
    with app.producer_or_acquire() as producer:
        for invocation_id in invocation_ids:
            text_id = str(invocation_id)
            message = amqp.as_task_v2(
                text_id, RUN_TASK, args=(text_id,), kwargs={}, countdown=countdown_s
            )
            amqp.send_task_message(
                producer, RUN_TASK, message, queue=queue, retry=False, declare=[]
            )
            count += 1
    return count
