"""Integration fixtures: a real Celery worker subprocess and a real webhook receiver.

* ``celery_worker``: the worker of one test module (started on first use, stopped when
  the module ends, so it never consumes messages another module's tests inspect in
  Redis). A test may ``kill()`` or ``restart(**env)`` it; the next test using it gets
  it back running with the default environment.
* ``start_worker(queues=..., concurrency=..., **env)``: a factory for extra workers of one
  test, stopped afterwards. By default they consume both Cronbeat queues, like
  ``celery_worker``.
* ``celery_client``: the test process's Celery app, configured from ``settings``, to
  publish messages (``messaging.publisher.publish_runs``) onto the worker's broker.
* ``receiver``: a webhook receiver on 127.0.0.1 for one test.
* ``broker``: a Redis client on the test broker, with the run queue empty before and
  after the test (``celery_app`` is configured for it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from app.config import Settings
from tasks.celery_app import RUN_QUEUE, celery_app, configure
from tests.support.receiver import Receiver, running_receiver
from tests.support.sample_worker import SampleWorker
from tests.support.worker import QUEUES, WorkerProcess


@pytest.fixture(scope="module")
def _module_worker(
    test_services: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(tmp_path_factory.mktemp("worker"))
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def celery_worker(_module_worker: WorkerProcess) -> WorkerProcess:
    if not _module_worker.is_default:
        _module_worker.restart()
    return _module_worker


@pytest.fixture
def start_worker(
    test_services: object, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(*, queues: str = QUEUES, concurrency: int = 2, heartbeat: bool = False,
              **env: str) -> WorkerProcess:
        worker = WorkerProcess(tmp_path / f"workers-{len(started)}", queues=queues,
                               concurrency=concurrency, heartbeat=heartbeat)
        worker.log_dir.mkdir()
        started.append(worker)
        worker.start(**env)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def celery_client(settings: Settings) -> Celery:
    return configure(celery_app, settings)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


@pytest.fixture
def broker(settings: Settings) -> Iterator[redis.Redis]:
    configure(celery_app, settings)
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(RUN_QUEUE)
    yield client
    client.delete(RUN_QUEUE)
    client.close()


@pytest.fixture
def sample_worker(settings: Settings, tmp_path: Path) -> Iterator[SampleWorker]:
    """The worker of a user's own Celery app (tests.sample_app) on queue ``sample``."""
    worker = SampleWorker(settings.redis_url, tmp_path)
    worker.clear()
    worker.start()
    yield worker
    worker.stop()
    worker.clear()
    worker.client.close()
