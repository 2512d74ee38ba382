"""The dispatcher tick task, fired by beat every CRONBEAT_TICK_SECONDS."""

from __future__ import annotations

from typing import Any

from tasks.celery_app import DISPATCH_TASK, celery_app


@celery_app.task(name=DISPATCH_TASK, ignore_result=True)
def dispatch_due_triggers() -> dict[str, Any]:
    """Run one dispatcher tick (claim, record, advance, publish, sweep) until idle."""
    from tasks.ticks import run_tick  # written with the dispatcher

    return run_tick()
