"""A user's own Celery app and task, scheduled by Cronbeat without a change.

    SAMPLE_BROKER_URL=redis://... celery -A tests.sample_app.tasks worker -Q sample

``add`` records each call (what it received, and the ``cronbeat`` header that names the
occurrence) in the broker's Redis, list ``sample:calls``, for the tests to read.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery

import cronbeat.celery

app = Celery("sample")
app.conf.update(
    broker_url=os.environ.get("SAMPLE_BROKER_URL", "redis://127.0.0.1:6379/0"),
    broker_connection_retry_on_startup=True,
    task_default_queue="sample",
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    # A message of a worker killed mid-task comes back after this long (Redis), not
    # after the default hour: the tests see the redelivery refused.
    task_acks_late=True,
    # (kombu looks for such messages every second here, not every 100 s).
    broker_transport_options={
        "visibility_timeout": float(os.environ.get("SAMPLE_VISIBILITY_TIMEOUT_S", "3600")),
        "unacked_restore_interval": 1, "unacked_restore_throttle": 1},
)
# The one line a user adds: the tasks below report their outcome when Cronbeat asks.
cronbeat.celery.install(app)

CALLS = "sample:calls"


def _record(call: Any, **fields: Any) -> None:
    client = redis.Redis.from_url(app.conf.broker_url)
    try:
        client.rpush(CALLS, json.dumps({
            **fields, "cronbeat": getattr(call.request, "cronbeat", None)}))
    finally:
        client.close()


@app.task(bind=True, name="sample.add")
def add(self: Any, x: int, y: int, *, scale: int = 1) -> int:
    """(x + y) * scale, recorded with the occurrence Cronbeat ran it for."""
    result = (x + y) * scale
    _record(self, args=[x, y], scale=scale, result=result)
    return result


@app.task(bind=True, name="sample.fail")
def fail(self: Any, message: str) -> None:
    """Raises ValueError(message), after recording the call."""
    _record(self, task="fail")
    raise ValueError(message)


@app.task(bind=True, name="sample.sleep")
def sleep(self: Any, seconds: float) -> float:
    """Sleeps, after recording that it started."""
    _record(self, task="sleep", seconds=seconds)
    time.sleep(seconds)
    return seconds
