"""Entry point for ``celery -A tasks.worker worker|beat``: configures the app from the env."""

from __future__ import annotations

from typing import Any

from celery.concurrency.thread import TaskPool as ThreadsPool
from celery.signals import (
    setup_logging,
    worker_init,
    worker_process_init,
    worker_shutting_down,
)

from app.logs import configure_logging
from messaging.config import RUN_QUEUE
from messaging.connect import stop_waiting
from tasks import alerts, engine_step, gate
from tasks.celery_app import RUN_TASK, celery_app, configure
from tasks.overrun import OverrunWatch
from tasks.run import RUN_TIME_LIMIT_S
from tasks.runtime import (
    configure_for_dispatcher,
    configure_for_worker,
    get_runtime,
    get_settings,
)

app = configure(celery_app, get_settings())
# Workers consume Cronbeat's queues only while their deployment is the active one.
gate.install(app)
# Workers consuming cronbeat.alerts run the alert watchdog (tasks.alerts).
alerts.install(app)
# Workers consuming cronbeat.runs deliver through the engine (tasks.engine), on a
# broker connection of its own.
engine_step.install(app)


@worker_init.connect
def _capture_queues(sender: Any, **_: Any) -> None:
    # Before the worker's bootsteps are built: they start only where their queue is
    # consumed, and the Celery consumer leaves cronbeat.runs to the engine.
    gate.capture(sender.app)


@worker_init.connect
def _size_for_threads(sender: Any, **_: Any) -> None:
    # The run worker on the threads pool (the Procfile's worker): a fixed budget of
    # database connections (CRONBEAT_WORKER_DB_POOL) for all its threads, and the prefork
    # hard time limit's stand-ins (tasks.overrun, statement_timeout). The dispatcher's
    # two threads keep the defaults: the history's maintenance may run long statements.
    pool = sender.pool_cls
    threads = pool is ThreadsPool or pool in ("threads", "celery.concurrency.thread:TaskPool")
    if threads and gate.consumes(RUN_QUEUE):
        configure_for_worker()
        OverrunWatch(RUN_TASK, RUN_TIME_LIMIT_S).start()
    elif threads:
        configure_for_dispatcher(sender.concurrency)


@worker_shutting_down.connect
def _stop_waiting_for_the_broker(**_: Any) -> None:
    # A warm shutdown waits for the running tasks: a tick that meets a dead broker then
    # gives up its publishes and reads within a second, instead of after kombu's tries.
    stop_waiting()


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    # A prefork child must not share the parent's pooled connections.
    get_runtime().engine.dispose(close=False)


@setup_logging.connect
def _cronbeat_logging(**_: Any) -> None:
    # Connecting here stops Celery from installing its own handlers: worker and beat
    # log through ours (text or JSON lines, CRONBEAT_LOG_FORMAT) like web does.
    configure_logging(get_settings())
