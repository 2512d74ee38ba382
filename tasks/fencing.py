"""What a worker of a superseded deployment does with work it should no longer run."""

from __future__ import annotations

import logging

from celery import Task

from app.deploy import Superseded
from tasks.celery_app import DISPATCH_QUEUE, RUN_QUEUE, celery_app

log = logging.getLogger(__name__)


def stop_consuming(task: Task, reason: Superseded) -> None:
    """Make this worker stop taking trigger work; what it is running finishes.

    The cancel is a broadcast to this worker's own node only: a newer deployment's
    workers keep consuming both queues.
    """
    hostname = task.request.hostname
    log.warning(
        "deployment superseded: this worker stops consuming trigger work",
        extra={"action": "deploy.superseded", "worker": hostname, "reason": reason.message},
    )
    if hostname:
        for queue in (RUN_QUEUE, DISPATCH_QUEUE):
            celery_app.control.cancel_consumer(queue, destination=[hostname])
