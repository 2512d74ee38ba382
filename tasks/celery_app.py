"""The worker's Celery application: the tasks it runs, configured by the entry point."""

from __future__ import annotations

from celery import Celery

from messaging.config import (  # noqa: F401 - the names the worker's modules use
    ALERT_QUEUE,
    ALERT_TASK,
    DISPATCH_QUEUE,
    DISPATCH_TASK,
    HISTORY_TASK,
    RUN_QUEUE,
    RUN_TASK,
    configure,
)

celery_app = Celery(
    "cronbeat", include=["tasks.alerts", "tasks.dispatch", "tasks.maintenance", "tasks.run"]
)
