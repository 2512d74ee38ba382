"""The whole firing path: the real dispatch task on a real worker, a real receiver.

The test process only sends ``dispatch_due_triggers`` to the broker (as beat does); the
worker claims, records, publishes and runs, and the receiver verifies each signature.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from app.config import Settings
from app.enums import InvocationStatus
from app.errors import TransientError
from app.firing.dispatch import DispatchOptions, dispatch_tick
from app.models import DispatcherHeartbeat, Invocation, InvocationAttempt, Trigger
from messaging.publisher import publish_runs
from tasks.celery_app import DISPATCH_QUEUE, DISPATCH_TASK, RUN_QUEUE
from tests.support.receiver import Receiver
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.slow

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DEADLINE_S = 30.0


def _db_now(db: sessionmaker[Session]) -> dt.datetime:
    with db.begin() as session:
        return session.execute(select(func.now())).scalar_one()


def _add(db: sessionmaker[Session], **values: Any) -> uuid.UUID:
    with db.begin() as session:
        return session.execute(insert(Trigger).values(**values).returning(Trigger.id)).scalar_one()


def _wait_final(db: sessionmaker[Session], count: int) -> list[Invocation]:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        with db.begin() as session:
            rows = session.execute(select(Invocation).order_by(Invocation.scheduled_for)).scalars()
            rows = list(rows)
        if len(rows) == count and all(r.status.is_final for r in rows):
            return rows
        time.sleep(0.2)
    raise AssertionError(f"not final within {DEADLINE_S}s: {[(r.status, r.attempt) for r in rows]}")


def test_a_one_time_and_a_cron_trigger_fire_through_beats_task_and_are_verified(
    db: sessionmaker[Session],
    celery_worker: WorkerProcess,
    celery_client: Celery,
    receiver: Receiver,
) -> None:
    now = _db_now(db)
    minute = now.replace(second=0, microsecond=0)
    common = {
        "tenant_id": "t1",
        "project_id": "p1",
        "target_kind": "webhook",
        "webhook_url": receiver.url(),
        "signing_secret": SECRET,
        "payload": {"report": "daily"},
        "timeout_s": 5,
    }
    run_at = now - dt.timedelta(seconds=1)
    once_id = _add(db, name="once", run_at=run_at, next_run_at=run_at, **common)
    cron_id = _add(db, name="every-minute", cron_expression="* * * * *",
                   next_run_at=minute, **common)

    celery_client.send_task(DISPATCH_TASK, queue=DISPATCH_QUEUE)

    received = receiver.wait_for(2, timeout_s=DEADLINE_S)
    rows = _wait_final(db, 2)
    assert len(received) == 2
    bodies = {}
    for request in received:
        # Raises if the signature does not match the body and headers.
        Webhook(SECRET).verify(request.body, request.headers)
        body = json.loads(request.body)
        assert request.headers["webhook-id"] == body["invocation"]
        bodies[body["trigger"]["id"]] = body
    assert set(bodies) == {str(once_id), str(cron_id)}
    assert bodies[str(cron_id)]["scheduled_for"] == minute.strftime("%Y-%m-%dT%H:%M:%SZ")
    by_trigger = {r.trigger_id: r for r in rows}
    for trigger_id in (once_id, cron_id):
        invocation = by_trigger[trigger_id]
        assert (invocation.status, invocation.attempt, invocation.response_status) == (
            InvocationStatus.SUCCEEDED, 1, 200)
        assert invocation.enqueued_at is not None
    assert by_trigger[once_id].scheduled_for == run_at
    assert by_trigger[cron_id].scheduled_for == minute
    with db.begin() as session:
        once = session.get_one(Trigger, once_id)
        cron = session.get_one(Trigger, cron_id)
        attempts = session.execute(select(func.count()).select_from(InvocationAttempt)).scalar_one()
    assert (once.enabled, once.next_run_at) == (False, None)
    assert cron.next_run_at == minute + dt.timedelta(minutes=1)
    assert attempts == 2

    # A second tick finds nothing due (unless the clock crossed into the next minute,
    # which fires the cron trigger's next occurrence, never an old one again). The
    # tick's heartbeat says when it ran.
    ticked = _last_tick(db)
    celery_client.send_task(DISPATCH_TASK, queue=DISPATCH_QUEUE)
    deadline = time.monotonic() + 20
    while _last_tick(db) == ticked:
        assert time.monotonic() < deadline, "the second tick never ran"
        time.sleep(0.05)
    with db.begin() as session:
        scheduled = session.execute(
            select(Invocation.trigger_id, Invocation.scheduled_for)
        ).all()
    assert sorted(scheduled) == sorted(
        [(once_id, run_at), (cron_id, minute)]
        + ([(cron_id, minute + dt.timedelta(minutes=1))] if len(scheduled) == 3 else [])
    )


def _due_now(db: sessionmaker[Session], receiver: Receiver) -> uuid.UUID:
    now = _db_now(db)
    return _add(db, tenant_id="t1", project_id="p1", name=f"once-{uuid.uuid4().hex[:6]}",
                run_at=now, next_run_at=now, target_kind="webhook", webhook_url=receiver.url(),
                timeout_s=5)


def _last_tick(db: sessionmaker[Session]) -> dt.datetime | None:
    with db.begin() as session:
        return session.execute(select(DispatcherHeartbeat.last_tick_at)).scalar_one()


def _queued(settings: Settings) -> int:
    broker = redis.Redis.from_url(settings.redis_url)
    try:
        return int(broker.llen(RUN_QUEUE))
    finally:
        broker.close()


def _age_invocations(db: sessionmaker[Session], seconds: int) -> None:
    shift = dt.timedelta(seconds=seconds)
    with db.begin() as session:
        session.execute(update(Invocation).values(
            created_at=Invocation.created_at - shift,
            enqueued_at=Invocation.enqueued_at - shift))


OPTIONS = DispatchOptions(batch_size=100, republish_after_s=5, deployment_id="test-worker")


def test_a_dispatcher_killed_between_commit_and_publish_loses_nothing_and_delivers_once(
    db: sessionmaker[Session], celery_worker: WorkerProcess, celery_client: Celery,
    receiver: Receiver, settings: Settings,
) -> None:
    _due_now(db, receiver)

    def die_before_publishing(ids: Sequence[uuid.UUID]) -> int:
        raise TransientError("fault hook: the process dies after commit, before publish")

    with pytest.raises(TransientError):
        dispatch_tick(db, die_before_publishing, OPTIONS)
    # A process that dies there never records the failed publish (as a raising publish
    # does): the row reads as sent at the tick's time.
    with db.begin() as session:
        session.execute(update(Invocation).values(enqueued_at=Invocation.created_at))
    # No message went out: nothing can be delivered.
    assert _queued(settings) == 0
    assert receiver.count == 0
    _age_invocations(db, OPTIONS.republish_after_s + 1)
    report = dispatch_tick(db, lambda ids: publish_runs(celery_client, ids), OPTIONS)
    assert report.republished == 1
    receiver.wait_for(1)
    (row,) = _wait_final(db, 1)
    assert (row.status, row.attempt) == (InvocationStatus.SUCCEEDED, 1)
    again = dispatch_tick(db, lambda ids: publish_runs(celery_client, ids), OPTIONS)
    # Nothing published again, nothing queued: no second delivery can come.
    assert (again.republished, _queued(settings), receiver.count) == (0, 0, 1)


def test_a_broker_that_lost_its_queue_is_refilled_by_the_sweep_and_delivers_once(
    db: sessionmaker[Session], celery_worker: WorkerProcess, celery_client: Celery,
    receiver: Receiver, settings: Settings,
) -> None:
    celery_worker.stop()  # nobody consumes while the queue is wiped
    _due_now(db, receiver)
    first = dispatch_tick(db, lambda ids: publish_runs(celery_client, ids), OPTIONS)
    assert first.published == 1
    broker = redis.Redis.from_url(settings.redis_url)
    try:
        assert broker.llen(RUN_QUEUE) == 1
        broker.delete(RUN_QUEUE)  # Redis restarted without persistence
        _age_invocations(db, OPTIONS.republish_after_s + 1)
        report = dispatch_tick(db, lambda ids: publish_runs(celery_client, ids), OPTIONS)
        assert (report.republished, broker.llen(RUN_QUEUE)) == (1, 1)
    finally:
        broker.close()
    celery_worker.start()
    receiver.wait_for(1)
    (row,) = _wait_final(db, 1)
    assert (row.status, row.attempt) == (InvocationStatus.SUCCEEDED, 1)
    # The one message was taken and nothing else is queued: no second delivery can come.
    assert (_queued(settings), receiver.count) == (0, 1)
