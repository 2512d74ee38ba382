"""Entry point for ``celery -A tasks.worker worker|beat``: configures the app from the env."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from tasks.celery_app import celery_app, configure
from tasks.runtime import get_runtime

app = configure(celery_app, get_runtime().settings)


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    # A prefork child must not share the parent's pooled connections.
    get_runtime().engine.dispose(close=False)
