"""The sweep publishes lost messages and due retries, never copies of a waiting backlog.

Real PostgreSQL and Redis: the run queue holds real run_trigger messages, read by
messaging.backlog the way the dispatcher reads it.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import Any

import redis
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.enums import InvocationStatus
from app.firing.dispatch import DispatchOptions, dispatch_tick
from app.firing.runner import RunOutcome, run_invocation
from app.models import Invocation, InvocationAttempt
from messaging.backlog import EPOCH_KEY, broker_epoch, oldest_waiting_run
from messaging.publisher import publish_runs
from tasks.celery_app import RUN_QUEUE, celery_app
from tests.support.receiver import Receiver, Reply
from tests.support.runs import add_invocation, add_trigger, load, no_task

NOW = dt.datetime(2026, 6, 1, 12, 0, 20, tzinfo=dt.UTC)
# The setting of the measurement: 5 s, the smallest CRONBEAT_REPUBLISH_AFTER_S.
OPTIONS = DispatchOptions(batch_size=5000, republish_after_s=5)
BACKLOG = 1500



def publish(ids: Sequence[uuid.UUID]) -> int:
    return publish_runs(celery_app, ids)


def waiting() -> uuid.UUID | None:
    return oldest_waiting_run(celery_app)


def pending_backlog(db: sessionmaker[Session], count: int, sent_at: dt.datetime) -> list[uuid.UUID]:
    """``count`` pending invocations of one trigger whose messages went out at ``sent_at``."""
    trigger_id = add_trigger(db, next_run_at=None, enabled=False)
    with db.begin() as session:
        rows = session.execute(
            text(
                "INSERT INTO invocations (trigger_id, tenant_id, project_id, scheduled_for,"
                " status, created_at, enqueued_at)"
                " SELECT :trigger_id, 't1', 'p1', :base + g * interval '1 minute',"
                " 'pending', :sent_at, :sent_at FROM generate_series(1, :n) AS g"
                " RETURNING id, scheduled_for"
            ),
            {"trigger_id": trigger_id, "base": sent_at, "sent_at": sent_at, "n": count},
        ).all()
    return [row.id for row in sorted(rows, key=lambda row: row.scheduled_for)]


def test_a_backlog_waiting_in_the_queue_is_not_copied_and_a_lost_message_is(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    # 1,500 runs stuck behind a slow receiver, sent a minute ago (12 times the
    # setting), all still waiting in the queue; one more whose message is gone.
    backlog = pending_backlog(db, BACKLOG, NOW - dt.timedelta(seconds=60))
    assert publish(backlog) == BACKLOG
    [lost] = pending_backlog(db, 1, NOW - dt.timedelta(seconds=120))
    assert waiting() == backlog[0]

    first = dispatch_tick(db, publish, OPTIONS, now=NOW, oldest_waiting=waiting)
    assert (first.republished, broker.llen(RUN_QUEUE)) == (1, BACKLOG + 1)
    assert json.loads(broker.lindex(RUN_QUEUE, 0))["headers"]["id"] == str(lost)

    # A worker takes the oldest 500 and finishes them; the rest still wait.
    taken = [uuid.UUID(json.loads(broker.rpop(RUN_QUEUE))["headers"]["id"])
             for _ in range(500)]
    assert taken == backlog[:500]
    with db.begin() as session:
        session.execute(update(Invocation).where(Invocation.id.in_(taken))
                        .values(status=InvocationStatus.SUCCEEDED, finished_at=NOW))
    later = [dispatch_tick(db, publish, OPTIONS, now=NOW + dt.timedelta(seconds=s),
                           oldest_waiting=waiting).republished for s in (10, 20, 30)]
    # One extra message in all, for the one really lost: 0.07 % of the backlog.
    assert later == [0, 0, 0]
    assert broker.llen(RUN_QUEUE) == BACKLOG + 1 - 500

    # The control: judged by age alone (the queue unread), every waiting run is copied.
    blind = dispatch_tick(db, publish, OPTIONS, now=NOW + dt.timedelta(seconds=40))
    assert blind.republished == BACKLOG - 500 + 1


def test_once_the_backlog_drains_past_a_lost_message_it_is_published_within_the_setting(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    # Sent in the same tick as the backlog (same enqueued_at), lost on the way.
    sent = NOW - dt.timedelta(seconds=60)
    backlog = pending_backlog(db, 3, sent)
    [lost] = pending_backlog(db, 1, sent)
    publish(backlog)
    assert dispatch_tick(db, publish, OPTIONS, now=NOW, oldest_waiting=waiting).republished == 0

    broker.delete(RUN_QUEUE)  # the worker took all three
    with db.begin() as session:
        session.execute(update(Invocation).where(Invocation.id.in_(backlog))
                        .values(status=InvocationStatus.SUCCEEDED, finished_at=NOW))
    report = dispatch_tick(db, publish, OPTIONS, now=NOW + dt.timedelta(seconds=1),
                           oldest_waiting=waiting)
    assert report.republished == 1
    assert [json.loads(m)["headers"]["id"] for m in broker.lrange(RUN_QUEUE, 0, -1)] == [
        str(lost)]


def test_a_retry_longer_than_a_tick_waits_in_the_database_and_is_published_when_due(
    db: sessionmaker[Session], broker: redis.Redis, settings: Settings, receiver: Receiver
) -> None:
    receiver.script(Reply(503, body="busy"))
    # A backoff of 10 minutes: full jitter draws from [0, 600 s]; the draw is fixed at
    # its top, past one tick (60 s).
    trigger_id = add_trigger(db, receiver, backoff_base_s=600, backoff_cap_s=600,
                             next_run_at=dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
    invocation_id = add_invocation(db, trigger_id)

    outcome = run_invocation(db, settings, invocation_id, send_task=no_task,
                             rand=lambda: 1.0)

    # No countdown message: the task publishes nothing, the row waits.
    assert outcome == RunOutcome(status=InvocationStatus.PENDING, attempt=1, retry_in_s=None)
    with db.begin() as session:
        # run_after is the finish's now() plus the delay; the attempt row's finished_at
        # is that same now().
        row = session.execute(
            select(Invocation.status, Invocation.enqueued_at,
                   func.extract("epoch", Invocation.run_after - InvocationAttempt.finished_at))
            .join(InvocationAttempt, InvocationAttempt.invocation_id == Invocation.id)
            .where(Invocation.id == invocation_id)
        ).one()
    status, enqueued_at, wait_s = row
    assert (status, enqueued_at) == (InvocationStatus.PENDING, None)
    run_after = load(db, invocation_id).run_after
    assert run_after is not None
    assert float(wait_s) == 600

    before = dispatch_tick(db, publish, OPTIONS, now=run_after - dt.timedelta(seconds=1),
                           oldest_waiting=waiting)
    assert (before.retries, before.republished, broker.llen(RUN_QUEUE)) == (0, 0, 0)
    due = dispatch_tick(db, publish, OPTIONS, now=run_after + dt.timedelta(seconds=1),
                        oldest_waiting=waiting)
    assert (due.retries, due.republished, broker.llen(RUN_QUEUE)) == (1, 0, 1)
    assert load(db, invocation_id).enqueued_at == run_after + dt.timedelta(seconds=1)
    # Published once: the next tick does not publish it again.
    again = dispatch_tick(db, publish, OPTIONS, now=run_after + dt.timedelta(seconds=30),
                          oldest_waiting=waiting)
    assert (again.retries, again.republished) == (0, 0)


def test_a_wiped_broker_gets_every_pending_run_again_at_the_next_tick(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    # Sent 2 s ago and 120 s ago, both long before the setting's 300 s would call them
    # lost. The first tick only learns the broker's epoch; then Redis restarts empty
    # (its epoch key is gone), and the next tick sends every pending run again.
    options = DispatchOptions(batch_size=5000, republish_after_s=300)
    broker.delete(EPOCH_KEY)

    def tick(at: dt.datetime) -> Any:
        return dispatch_tick(db, publish, options, now=at, oldest_waiting=waiting,
                             broker_epoch=lambda: broker_epoch(celery_app))

    recent = pending_backlog(db, 3, NOW - dt.timedelta(seconds=2))
    older = pending_backlog(db, 2, NOW - dt.timedelta(seconds=120))
    assert tick(NOW).republished == 0  # a broker seen for the first time: nothing lost
    broker.delete(EPOCH_KEY)

    assert tick(NOW + dt.timedelta(seconds=1)).republished == 5
    assert {uuid.UUID(json.loads(m)["headers"]["id"]) for m in broker.lrange(RUN_QUEUE, 0, -1)
            } == set(recent + older)
    # The new epoch is recorded: the next tick copies nothing.
    broker.delete(RUN_QUEUE)
    assert tick(NOW + dt.timedelta(seconds=2)).republished == 0
    assert broker.llen(RUN_QUEUE) == 0
