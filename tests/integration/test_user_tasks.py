"""Task targets against a user's own Celery app (tests.sample_app) in a worker process of
its own, as a shop runs it: its task is called as it is, with the occurrence's facts in
a header it can read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.enums import InvocationStatus
from tests.sample_app.tasks import CALLS
from tests.support.runs import DEADLINE_S, add_invocation, add_trigger, run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sample_worker(settings: Settings, tmp_path: Path) -> Iterator[redis.Redis]:
    """The sample app's worker on queue ``sample``; yields a client of its Redis."""
    log = tmp_path / "sample-worker.log"
    celery = str(Path(sys.executable).parent / "celery")
    env = {**os.environ, "SAMPLE_BROKER_URL": settings.redis_url, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [celery, "-A", "tests.sample_app.tasks", "worker", "-Q", "sample", "-P",
             "threads", "-c", "2", "-n", f"sample-{os.getpid()}@%h", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(CALLS, "sample")
    try:
        deadline = time.monotonic() + 30
        while " ready." not in log.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield client
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
        client.delete(CALLS, "sample")
        client.close()


def _calls(client: redis.Redis, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + DEADLINE_S
    while client.llen(CALLS) < count:
        assert time.monotonic() < deadline, f"{client.llen(CALLS)} of {count} calls"
        time.sleep(0.05)
    return [json.loads(raw) for raw in client.lrange(CALLS, 0, -1)]


def test_the_users_task_receives_its_stored_args_and_kwargs_and_reads_the_header(
    db: sessionmaker[Session], celery_worker: Any, celery_client: Celery,
    sample_worker: redis.Redis,
) -> None:
    celery_worker.restart(CRONBEAT_TASK_QUEUES="celery,sample")
    trigger_id = add_trigger(db, target_kind="task", webhook_url=None, task_name="sample.add",
                             task_queue="sample", name="add-up", task_args=[2, 3],
                             task_kwargs={"scale": 10})
    invocation_id = add_invocation(db, trigger_id)

    assert run(celery_client, db, invocation_id).status is InvocationStatus.SUCCEEDED
    assert _calls(sample_worker, 1) == [{
        "args": [2, 3], "scale": 10, "result": 50,
        "cronbeat": {"invocation": str(invocation_id), "trigger": str(trigger_id),
                     "trigger_name": "add-up", "scheduled_for": "2026-03-07T05:00:00Z",
                     "attempt": 1}}]
