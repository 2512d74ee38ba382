"""A user's own Celery app and task, scheduled by Cronbeat without a change.

    SAMPLE_BROKER_URL=redis://... celery -A tests.sample_app.tasks worker -Q sample

``add`` records each call (what it received, and the ``cronbeat`` header that names the
occurrence) in the broker's Redis, list ``sample:calls``, for the tests to read.
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from celery import Celery

app = Celery("sample")
app.conf.update(
    broker_url=os.environ.get("SAMPLE_BROKER_URL", "redis://127.0.0.1:6379/0"),
    broker_connection_retry_on_startup=True,
    task_default_queue="sample",
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
)

CALLS = "sample:calls"


@app.task(bind=True, name="sample.add")
def add(self: Any, x: int, y: int, *, scale: int = 1) -> int:
    """(x + y) * scale, recorded with the occurrence Cronbeat ran it for."""
    result = (x + y) * scale
    client = redis.Redis.from_url(app.conf.broker_url)
    try:
        client.rpush(CALLS, json.dumps({
            "args": [x, y], "scale": scale, "result": result,
            "cronbeat": getattr(self.request, "cronbeat", None)}))
    finally:
        client.close()
    return result
