"""The baseline of bench/e2e.py: a plain Celery app whose one task is ``requests.post``
through a keep-alive ``requests.Session`` (one per worker thread).

No database, no claim, no lease: what any Celery user writes to deliver a webhook. The
worker runs like Cronbeat's (threads pool, 64 threads, acks late, prefetch multiplier 1,
JSON), so the difference measured is Cronbeat's own work:

    BENCH_BASELINE_BROKER_URL=redis://127.0.0.1:6379/14 \\
        celery -A bench.baseline_tasks worker -Q bench.baseline -P threads -c 64
"""

from __future__ import annotations

import os
import threading
from typing import Any

import requests
from celery import Celery

QUEUE = "bench.baseline"
TASK = "bench.baseline.post"

app = Celery("bench_baseline")
app.conf.update(
    broker_url=os.environ.get("BENCH_BASELINE_BROKER_URL", "redis://127.0.0.1:6379/14"),
    broker_connection_retry_on_startup=True,
    result_backend=None,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
)


_local = threading.local()


def _session() -> requests.Session:
    # One keep-alive session per worker thread, as a careful user writes it: no new
    # connection (nor TLS handshake) per delivery.
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


@app.task(name=TASK, ignore_result=True)
def post(url: str, body: dict[str, Any]) -> int:
    """POST ``body`` as JSON to ``url`` through a keep-alive session; the status."""
    return _session().post(url, json=body, timeout=30).status_code
