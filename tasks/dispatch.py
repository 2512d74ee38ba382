"""The dispatcher tick task, fired by beat every CRONBEAT_TICK_SECONDS."""

from __future__ import annotations

from typing import Any

from celery import Task

from app.deploy import Superseded
from tasks.celery_app import DISPATCH_QUEUE, DISPATCH_TASK, celery_app
from tasks.fencing import stop_consuming
from tasks.ticks import run_tick


@celery_app.task(name=DISPATCH_TASK, ignore_result=True, bind=True)
def dispatch_due_triggers(self: Task) -> dict[str, Any] | None:
    """Run one dispatcher tick (claim, record, advance, publish, sweep) until idle.

    Returns:
        The tick's report, or None when this worker's deployment is superseded: then
        the tick is handed to the active deployment's workers instead.
    """
    try:
        return run_tick()
    except Superseded as exc:
        celery_app.send_task(DISPATCH_TASK, queue=DISPATCH_QUEUE)
        stop_consuming(self, exc)
        return None
