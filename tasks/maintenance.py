"""The history's maintenance task, fired by beat every MAINTENANCE_INTERVAL_S."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

from app.history.retention import maintain
from tasks.celery_app import HISTORY_TASK, celery_app
from tasks.runtime import get_runtime

log = logging.getLogger(__name__)


@celery_app.task(name=HISTORY_TASK, ignore_result=True)
def maintain_history() -> dict[str, Any]:
    """Add partitions ahead, roll up settled days, drop expired ones (app.history.retention)."""
    runtime = get_runtime()
    report = maintain(runtime.engine, now=dt.datetime.now(dt.UTC),
                      retention_days=runtime.settings.history_retention_days)
    summary = dataclasses.asdict(report)
    if report.added or report.dropped or report.kept_back or report.lock_timeouts:
        log.info("history: added %d days, dropped %d (%d rows), kept back %d, %d lock timeouts",
                 len(report.added), len(report.dropped), report.rows_dropped,
                 len(report.kept_back), report.lock_timeouts,
                 extra={"action": "history.maintained"})
    return {key: [str(d) for d in value] if isinstance(value, list) else value
            for key, value in summary.items()}
