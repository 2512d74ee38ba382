"""The engine's own consumer (tasks.run_consumer) on a redis-server of its own."""

from __future__ import annotations

import dataclasses
import queue
import time
import uuid

from celery import Celery

from app.config import Settings
from messaging.config import RUN_QUEUE
from messaging.publisher import publish_runs
from tasks.celery_app import configure
from tasks.run_consumer import Delivery, RunConsumer
from tests.support.fleet import PrivateRedis


def _invocation_id(delivery: Delivery) -> str:
    return str(delivery.message.headers["id"])


def test_acks_that_fail_after_a_restart_make_the_consumer_connect_again(
    settings: Settings, redis_server: PrivateRedis,
) -> None:
    # Two messages fill the prefetch window. Redis restarts (empty) before their acks:
    # kombu keeps counting them unacknowledged, so the consumer would read nothing more
    # from its socket, and never see that the broker went away. A failed ack ends the
    # connection instead, and the run published after the restart arrives.
    app = configure(Celery("run-consumer-test", set_as_current=False),
                    dataclasses.replace(settings, redis_url=redis_server.url))
    received: queue.Queue[Delivery] = queue.Queue()
    consumer = RunConsumer(app, RUN_QUEUE, received.put, prefetch=2,
                           may_consume=lambda: True, name="test consumer")
    first = [uuid.uuid4(), uuid.uuid4()]
    publish_runs(app, first)
    consumer.start()
    try:
        held = [received.get(timeout=10), received.get(timeout=10)]
        assert sorted(map(_invocation_id, held)) == sorted(map(str, first))
        redis_server.kill()
        for delivery in held:
            consumer.ack(delivery)  # tried within 20 ms: while Redis is down
        time.sleep(1.0)  # down for a second, as in the broker-fault test
        redis_server.start()
        after = uuid.uuid4()
        publish_runs(app, [after])
        assert _invocation_id(received.get(timeout=20)) == str(after)
        assert received.empty()
    finally:
        consumer.close(timeout_s=5)
