"""The whole firing path: the real dispatch task on a real worker, a real receiver.

The test process only sends ``dispatch_due_triggers`` to the broker (as beat does); the
worker claims, records, publishes and runs, and the receiver verifies each signature.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from app.enums import InvocationStatus
from app.models import Invocation, InvocationAttempt, Trigger
from tasks.celery_app import DISPATCH_QUEUE, DISPATCH_TASK
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
    # which fires the cron trigger's next occurrence, never an old one again).
    celery_client.send_task(DISPATCH_TASK, queue=DISPATCH_QUEUE)
    time.sleep(2)
    with db.begin() as session:
        scheduled = session.execute(
            select(Invocation.trigger_id, Invocation.scheduled_for)
        ).all()
    assert sorted(scheduled) == sorted(
        [(once_id, run_at), (cron_id, minute)]
        + ([(cron_id, minute + dt.timedelta(minutes=1))] if len(scheduled) == 3 else [])
    )
