"""Entry point for ``celery -A tasks.worker worker|beat``: configures the app from the env."""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging, worker_process_init

from app.logs import configure_logging
from tasks import gate
from tasks.celery_app import celery_app, configure
from tasks.runtime import get_runtime

app = configure(celery_app, get_runtime().settings)
# Workers consume Cronbeat's queues only while their deployment is the active one.
gate.install(app)


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    # A prefork child must not share the parent's pooled connections.
    get_runtime().engine.dispose(close=False)


@setup_logging.connect
def _cronbeat_logging(**_: Any) -> None:
    # Connecting here stops Celery from installing its own handlers: worker and beat
    # log through ours (text or JSON lines, CRONBEAT_LOG_FORMAT) like web does.
    configure_logging(get_runtime().settings)
