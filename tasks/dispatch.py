"""The dispatcher tick task, fired by beat every CRONBEAT_TICK_SECONDS."""

from __future__ import annotations

from typing import Any

from app.deploys.deploy import Superseded
from tasks.celery_app import DISPATCH_QUEUE, DISPATCH_TASK, celery_app
from tasks.ticks import run_tick


@celery_app.task(name=DISPATCH_TASK, ignore_result=True)
def dispatch_due_triggers() -> dict[str, Any] | None:
    """Run one dispatcher tick (claim, record, advance, publish, sweep) until idle.

    Returns:
        The tick's report, or None when this worker's deployment is not the active
        one: then the tick is handed to the active deployment's dispatchers instead.
    """
    try:
        return run_tick()
    except Superseded:
        # Hand the tick to the active deployment's dispatchers; this worker's gate
        # (tasks/gate.py) stops consuming within a moment of the activation.
        celery_app.send_task(DISPATCH_TASK, queue=DISPATCH_QUEUE)
        return None
