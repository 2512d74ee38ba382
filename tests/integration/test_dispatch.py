"""The dispatcher against real PostgreSQL and Redis: claims, misfires, outbox and sweep."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import redis
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.enums import InvocationStatus
from app.errors import TransientError
from app.firing.dispatch import DispatchOptions, dispatch_tick
from app.models import Alert, AlertChannel, Invocation, InvocationAttempt, Trigger
from messaging.publisher import publish_runs
from tasks.celery_app import RUN_QUEUE, celery_app
from tests.support.runs import add_trigger

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 1, 12, 0, 20, tzinfo=UTC)
OPTIONS = DispatchOptions(batch_size=500, republish_after_s=60)



def queued_ids(client: redis.Redis) -> list[str]:
    """The invocation ids of the run_trigger messages waiting in Redis."""
    ids = []
    for raw in client.lrange(RUN_QUEUE, 0, -1):
        envelope = json.loads(raw)
        assert envelope["headers"]["task"] == "cronbeat.run_trigger"
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        assert envelope["headers"]["id"] == args[0]
        ids.append(args[0])
    return ids


def publish(ids: Sequence[uuid.UUID]) -> int:
    return publish_runs(celery_app, ids)


def invocations(db: sessionmaker[Session], trigger_id: uuid.UUID) -> list[tuple[Any, ...]]:
    with db.begin() as session:
        rows = session.execute(
            select(Invocation.scheduled_for, Invocation.status)
            .where(Invocation.trigger_id == trigger_id)
            .order_by(Invocation.scheduled_for)
        ).all()
    return [tuple(r) for r in rows]


def test_a_due_cron_trigger_fires_once_and_advances_from_its_scheduled_time(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    trigger_id = add_trigger(
        db, cron_expression="*/5 * * * *", next_run_at=dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    )
    report = dispatch_tick(db, publish, OPTIONS, now=NOW)
    assert (report.claimed, report.created, report.missed, report.published) == (1, 1, 0, 1)
    assert invocations(db, trigger_id) == [
        (dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC), InvocationStatus.PENDING)
    ]
    with db.begin() as session:
        trigger = session.get_one(Trigger, trigger_id)
        invocation = session.execute(select(Invocation)).scalar_one()
        assert trigger.next_run_at == dt.datetime(2026, 6, 1, 12, 5, tzinfo=UTC)
        assert trigger.last_scheduled_for == dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
        assert invocation.enqueued_at is not None
    assert queued_ids(broker) == [str(invocation.id)]
    # A second tick at the same instant finds nothing due and publishes nothing.
    again = dispatch_tick(db, publish, OPTIONS, now=NOW)
    assert (again.claimed, again.created, again.published) == (0, 0, 0)
    assert len(queued_ids(broker)) == 1


def test_a_one_time_trigger_fires_once_and_is_finished(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    run_at = dt.datetime(2026, 6, 1, 12, 0, 3, 250000, tzinfo=UTC)
    trigger_id = add_trigger(db, run_at=run_at, next_run_at=run_at)
    report = dispatch_tick(db, publish, OPTIONS, now=NOW)
    assert (report.claimed, report.created) == (1, 1)
    assert invocations(db, trigger_id) == [(run_at, InvocationStatus.PENDING)]
    with db.begin() as session:
        trigger = session.get_one(Trigger, trigger_id)
        assert (trigger.enabled, trigger.next_run_at) == (False, None)
    assert len(queued_ids(broker)) == 1


def test_a_trigger_not_yet_due_is_left_alone(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    later = dt.datetime(2026, 6, 1, 12, 1, tzinfo=UTC)
    trigger_id = add_trigger(db, cron_expression="* * * * *", next_run_at=later)
    report = dispatch_tick(db, publish, OPTIONS, now=NOW)
    assert report.claimed == 0
    with db.begin() as session:
        assert session.get_one(Trigger, trigger_id).next_run_at == later


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("run_once", ["missed", "missed", "pending"]),
        ("skip", ["missed", "missed", "missed"]),
        ("run_all", ["pending", "pending", "pending"]),
    ],
)
def test_a_scheduler_down_for_three_hours_applies_the_misfire_policy(
    db: sessionmaker[Session], broker: redis.Redis, policy: str, expected: list[str]
) -> None:
    # Hourly at :00; "down" since 09:30, so 10:00, 11:00 and 12:00 are due at 12:30:20.
    now = dt.datetime(2026, 6, 1, 12, 30, 20, tzinfo=UTC)
    trigger_id = add_trigger(
        db,
        cron_expression="0 * * * *",
        next_run_at=dt.datetime(2026, 6, 1, 10, 0, tzinfo=UTC),
        misfire_policy=policy,
        misfire_grace_s=60,
    )
    report = dispatch_tick(db, publish, OPTIONS, now=now)
    rows = invocations(db, trigger_id)
    assert [r[0] for r in rows] == [
        dt.datetime(2026, 6, 1, h, 0, tzinfo=UTC) for h in (10, 11, 12)
    ]
    assert [r[1].value for r in rows] == expected
    runs = expected.count("pending")
    assert (report.created, report.missed, report.published) == (runs, 3 - runs, runs)
    assert len(queued_ids(broker)) == runs
    with db.begin() as session:
        assert session.get_one(Trigger, trigger_id).next_run_at == dt.datetime(
            2026, 6, 1, 13, 0, tzinfo=UTC
        )
        missed_rows = session.execute(
            select(Invocation.finished_at, Invocation.last_error).where(
                Invocation.status == InvocationStatus.MISSED
            )
        ).all()
    assert all(r.finished_at == now and "misfire grace" in r.last_error for r in missed_rows)


def _crash(ids: Sequence[uuid.UUID]) -> int:
    raise TransientError("fault hook: the broker refuses the publish after commit")


def test_a_failed_publish_is_published_by_the_next_tick_exactly_once(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    trigger_id = add_trigger(
        db, cron_expression="0 * * * *", next_run_at=dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    )
    with pytest.raises(TransientError, match="fault hook"):
        dispatch_tick(db, _crash, OPTIONS, now=NOW)
    assert [r[1] for r in invocations(db, trigger_id)] == [InvocationStatus.PENDING]
    with db.begin() as session:
        invocation_id, enqueued_at = session.execute(
            select(Invocation.id, Invocation.enqueued_at)).one()
    assert (enqueued_at, queued_ids(broker)) == (None, [])  # recorded as unsent
    # The next tick publishes it, well before CRONBEAT_REPUBLISH_AFTER_S.
    soon = dispatch_tick(db, publish, OPTIONS, now=NOW + dt.timedelta(seconds=30))
    assert (soon.retries, soon.republished) == (1, 0)
    assert queued_ids(broker) == [str(invocation_id)]
    after = dispatch_tick(db, publish, OPTIONS, now=NOW + dt.timedelta(seconds=45))
    assert (after.retries, after.republished) == (0, 0)
    assert len(queued_ids(broker)) == 1


def test_a_crash_between_commit_and_publish_is_delivered_by_the_next_sweep_exactly_once(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    trigger_id = add_trigger(
        db, cron_expression="0 * * * *", next_run_at=dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    )
    with pytest.raises(TransientError, match="fault hook"):
        dispatch_tick(db, _crash, OPTIONS, now=NOW)
    # The process died before it could record the failure: the row still reads as sent.
    with db.begin() as session:
        session.execute(update(Invocation).values(enqueued_at=NOW))
    assert [r[1] for r in invocations(db, trigger_id)] == [InvocationStatus.PENDING]
    assert queued_ids(broker) == []
    # Not yet stale: a tick within republish_after_s leaves it to the (dead) publisher.
    soon = dispatch_tick(db, publish, OPTIONS, now=NOW + dt.timedelta(seconds=30))
    assert soon.republished == 0
    _age_rows(db, seconds=OPTIONS.republish_after_s + 5)
    later = dispatch_tick(db, publish, OPTIONS, now=NOW + dt.timedelta(seconds=40))
    assert later.republished == 1
    with db.begin() as session:
        invocation_id = session.execute(select(Invocation.id)).scalar_one()
    assert queued_ids(broker) == [str(invocation_id)]
    # The sweep marked it published; the next sweep does not publish it again.
    after = dispatch_tick(db, publish, OPTIONS, now=NOW + dt.timedelta(seconds=45))
    assert after.republished == 0
    assert len(queued_ids(broker)) == 1


def test_a_wiped_broker_queue_is_refilled_by_the_sweep_once(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    add_trigger(db, cron_expression="0 * * * *",
                next_run_at=dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    dispatch_tick(db, publish, OPTIONS, now=NOW)
    assert len(queued_ids(broker)) == 1
    broker.delete(RUN_QUEUE)  # Redis restarted without persistence
    _age_rows(db, seconds=OPTIONS.republish_after_s + 5)
    report = dispatch_tick(db, publish, OPTIONS, now=NOW + dt.timedelta(seconds=10))
    assert report.republished == 1
    assert len(queued_ids(broker)) == 1
    assert dispatch_tick(db, publish, OPTIONS, now=NOW + dt.timedelta(seconds=20)).republished == 0


def test_an_expired_lease_is_taken_back_and_published_again(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    trigger_id = add_trigger(db, cron_expression="0 * * * *",
                             next_run_at=dt.datetime(2026, 6, 1, 13, 0, tzinfo=UTC))
    exhausted_id = add_trigger(db, cron_expression="0 * * * *", max_attempts=1,
                               next_run_at=dt.datetime(2026, 6, 1, 13, 0, tzinfo=UTC))
    started = NOW - dt.timedelta(minutes=5)
    ids = {}
    with db.begin() as session:
        for tid in (trigger_id, exhausted_id):
            ids[tid] = session.execute(
                insert(Invocation).values(
                    trigger_id=tid, tenant_id="t1", project_id="p1",
                    scheduled_for=dt.datetime(2026, 6, 1, 11, 55, tzinfo=UTC),
                    status="running", attempt=1, started_at=started,
                    lease_expires_at=NOW - dt.timedelta(seconds=1),
                ).returning(Invocation.id)
            ).scalar_one()
            session.execute(insert(InvocationAttempt).values(
                invocation_id=ids[tid], number=1, started_at=started,
                scheduled_for=dt.datetime(2026, 6, 1, 11, 55, tzinfo=UTC)))
    report = dispatch_tick(db, publish, OPTIONS, now=NOW)
    assert report.leases_expired == 1
    assert queued_ids(broker) == [str(ids[trigger_id])]
    with db.begin() as session:
        retried = session.get_one(Invocation, ids[trigger_id])
        failed = session.get_one(Invocation, ids[exhausted_id])
        outcomes = session.execute(
            select(InvocationAttempt.outcome).order_by(InvocationAttempt.id)
        ).scalars().all()
    assert (retried.status, retried.lease_expires_at, retried.attempt) == (
        InvocationStatus.PENDING, None, 1)
    assert (failed.status, failed.finished_at) == (InvocationStatus.FAILED, NOW)
    assert outcomes == ["abandoned", "abandoned"]


def test_a_broken_broker_fails_the_tick_loudly_and_loses_nothing(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    add_trigger(db, cron_expression="0 * * * *",
                next_run_at=dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC))

    def down(ids: Sequence[uuid.UUID]) -> int:
        raise TransientError("broker down")

    with pytest.raises(TransientError):
        dispatch_tick(db, down, OPTIONS, now=NOW)
    with db.begin() as session:
        assert session.execute(
            select(func.count()).where(Invocation.enqueued_at.is_(None))
        ).scalar_one() == 1


def _age_rows(db: sessionmaker[Session], *, seconds: int) -> None:
    """Move every invocation's timestamps back, as if the tick ran ``seconds`` ago."""
    shift = dt.timedelta(seconds=seconds)
    with db.begin() as session:
        session.execute(
            update(Invocation).values(
                created_at=Invocation.created_at - shift,
                enqueued_at=Invocation.enqueued_at - shift,
            )
        )


def test_a_trigger_whose_schedule_no_longer_computes_is_recorded_failed_and_disabled_alone(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    due = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    healthy = [add_trigger(db, cron_expression="*/5 * * * *", next_run_at=due) for _ in range(2)]
    broken = add_trigger(db, cron_expression="*/5 * * * *", next_run_at=due,
                         timezone="Not/AZone")  # e.g. a zone a tzdata update removed
    with db.begin() as session:  # the project has an alert channel: its failure alerts
        session.execute(insert(AlertChannel).values(
            tenant_id="t1", project_id="p1", name="ops", url="https://example.com/alerts",
            signing_secret="whsec_" + "A" * 32))
    report = dispatch_tick(db, publish, OPTIONS, now=NOW)
    assert (report.claimed, report.created, report.published) == (3, 2, 2)
    for trigger_id in healthy:
        assert invocations(db, trigger_id) == [(due, InvocationStatus.PENDING)]
    assert invocations(db, broken) == [(due, InvocationStatus.FAILED)]
    with db.begin() as session:
        trigger = session.get_one(Trigger, broken)
        error = session.execute(
            select(Invocation.last_error).where(Invocation.trigger_id == broken)
        ).scalar_one()
    assert (trigger.enabled, trigger.next_run_at) == (False, None)
    assert error == ("not run: the trigger's schedule cannot be computed"
                     " (unknown time zone: Not/AZone); trigger disabled")
    with db.begin() as session:
        [alert] = session.execute(select(Alert)).scalars()
        failed_id = session.execute(
            select(Invocation.id).where(Invocation.trigger_id == broken)).scalar_one()
    assert (alert.kind, alert.trigger_id, alert.invocation_id) == ("failing", broken, failed_id)
    assert alert.body["invocation"]["last_error"] == (
        "the trigger's schedule cannot be computed; trigger disabled")


def test_the_sweep_runs_even_when_the_ticks_own_publishing_fails(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    add_trigger(db, cron_expression="0 * * * *",
                next_run_at=dt.datetime(2026, 6, 1, 11, 0, tzinfo=UTC), misfire_grace_s=86400)
    dispatch_tick(db, lambda ids: 0, OPTIONS, now=NOW - dt.timedelta(hours=1))  # never sent
    _age_rows(db, seconds=OPTIONS.republish_after_s + 5)
    add_trigger(db, cron_expression="0 * * * *",
                next_run_at=dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    calls: list[int] = []

    def fails_once(ids: Sequence[uuid.UUID]) -> int:
        calls.append(len(ids))
        if len(calls) == 1:
            raise TransientError("broker blip")
        return publish(ids)

    with pytest.raises(TransientError, match="broker blip"):
        dispatch_tick(db, fails_once, OPTIONS, now=NOW)
    assert calls == [2, 1]  # two new runs (not published), then the one stale run
    assert len(queued_ids(broker)) == 1


def test_a_grace_below_the_tick_interval_is_raised_to_it(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    # Seen 20 s after its instant, as any tick may: with grace 0 a "skip" trigger would
    # never run at all.
    trigger_id = add_trigger(db, cron_expression="0 * * * *", misfire_policy="skip",
                             misfire_grace_s=0,
                             next_run_at=dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    options = DispatchOptions(batch_size=500, republish_after_s=60, min_grace_s=90)
    dispatch_tick(db, publish, options, now=NOW)
    assert invocations(db, trigger_id) == [
        (dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC), InvocationStatus.PENDING)]


def test_the_sweep_republishes_a_backlog_larger_than_one_batch_in_one_tick(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    for _ in range(5):
        add_trigger(db, cron_expression="0 * * * *",
                    next_run_at=dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    small = DispatchOptions(batch_size=2, republish_after_s=60)
    dispatch_tick(db, lambda ids: len(ids), small, now=NOW)  # "published", but lost
    assert queued_ids(broker) == []
    _age_rows(db, seconds=small.republish_after_s + 5)
    report = dispatch_tick(db, publish, small, now=NOW + dt.timedelta(seconds=10))
    assert report.republished == 5
    assert len(set(queued_ids(broker))) == 5


def test_an_interval_trigger_after_an_outage_runs_its_latest_occurrence_once(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    # Every 90 s from 12:00:00; the dispatcher was down until 12:10:05. The grace is
    # the floor (one tick + 30 s = 90 s): only 12:09:00 is on time, and it runs; the
    # six before it are recorded missed; the next is counted from the anchor.
    anchor = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    trigger_id = add_trigger(db, interval_s=90, start_at=anchor, next_run_at=anchor,
                             misfire_grace_s=0)
    now = dt.datetime(2026, 6, 1, 12, 10, 5, tzinfo=UTC)
    report = dispatch_tick(db, publish, dataclasses.replace(OPTIONS, min_grace_s=90), now=now)
    instants = [anchor + dt.timedelta(seconds=90 * k) for k in range(7)]
    assert invocations(db, trigger_id) == [
        *[(moment, InvocationStatus.MISSED) for moment in instants[:-1]],
        (instants[-1], InvocationStatus.PENDING),
    ]
    assert (report.created, report.missed, report.published) == (1, 6, 1)
    with db.begin() as session:
        trigger = session.get_one(Trigger, trigger_id)
    assert trigger.next_run_at == dt.datetime(2026, 6, 1, 12, 10, 30, tzinfo=UTC)
    assert trigger.last_scheduled_for == instants[-1]
    assert len(queued_ids(broker)) == 1
