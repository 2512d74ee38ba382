"""Second precision: one-time and interval occurrences taken one tick ahead and held
until their instant (app.firing.dispatch), and everything between the tick and the
instant obeyed. Real PostgreSQL and Redis; a real worker where a run is delivered."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import redis
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.editing import triggers as editing
from app.enums import InvocationStatus
from app.firing import fairness
from app.firing.dispatch import DispatchOptions, dispatch_tick
from app.models import Invocation, InvocationAttempt, InvocationKey, Trigger
from app.queries import parking
from app.queries.cancellation import DISABLED_REASON, RESCHEDULED_REASON
from messaging.publisher import publish_runs
from tasks.celery_app import RUN_QUEUE, celery_app
from tests.support.receiver import Receiver
from tests.support.runs import DEADLINE_S, add_trigger

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 1, 12, 0, 20, tzinfo=UTC)
OPTIONS = DispatchOptions(batch_size=500, republish_after_s=60, hold_s=75)
S = dt.timedelta(seconds=1)


def publish(keys: Sequence[InvocationKey], eta: dt.datetime | None = None) -> int:
    return publish_runs(celery_app, keys, eta=eta)


def queued(client: redis.Redis) -> dict[str, str | None]:
    """Each waiting run message's invocation id and its ETA header."""
    found = {}
    for raw in client.lrange(RUN_QUEUE, 0, -1):
        envelope = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(envelope["body"]))
        found[args[0]] = envelope["headers"]["eta"]
    return found


def rows(db: sessionmaker[Session], trigger_id: uuid.UUID) -> list[Any]:
    with db.begin() as session:
        return list(session.execute(
            select(Invocation.scheduled_for, Invocation.status, Invocation.run_after,
                   Invocation.enqueued_at, Invocation.last_error)
            .where(Invocation.trigger_id == trigger_id)
            .order_by(Invocation.scheduled_for)).all())


def next_run_at(db: sessionmaker[Session], trigger_id: uuid.UUID) -> dt.datetime | None:
    with db.begin() as session:
        return session.get_one(Trigger, trigger_id).next_run_at


def test_a_tick_takes_what_falls_due_before_the_next_tick_and_holds_it_until_its_instant(
    db: sessionmaker[Session], broker: redis.Redis,
) -> None:
    once = add_trigger(db, run_at=NOW + 20 * S, next_run_at=NOW + 20 * S)
    later = add_trigger(db, run_at=NOW + 80 * S, next_run_at=NOW + 80 * S)
    every_7 = add_trigger(db, interval_s=7, start_at=NOW + S, next_run_at=NOW + S)
    cron = add_trigger(db, cron_expression="* * * * *", next_run_at=NOW + 40 * S)
    report = dispatch_tick(db, publish, OPTIONS, now=NOW)
    # Through NOW + 75 s: the one-time run at +20 s and the interval's +1, +8, ... +71 s.
    interval_instants = [NOW + (1 + 7 * k) * S for k in range(11)]
    assert (report.claimed, report.created, report.held, report.published) == (2, 12, 12, 12)
    assert rows(db, once) == [(NOW + 20 * S, InvocationStatus.PENDING, NOW + 20 * S, NOW, None)]
    assert rows(db, every_7) == [(at, InvocationStatus.PENDING, at, NOW, None)
                                 for at in interval_instants]
    assert next_run_at(db, every_7) == NOW + 78 * S
    # Beyond the window, and cron on its minute: left for their ticks.
    assert (rows(db, later), next_run_at(db, later)) == ([], NOW + 80 * S)
    assert (rows(db, cron), next_run_at(db, cron)) == ([], NOW + 40 * S)
    # Each message carries its instant as its ETA: the worker holds it until then.
    with db.begin() as session:
        ids = dict(session.execute(select(Invocation.id, Invocation.scheduled_for)).all())
    assert queued(broker) == {str(i): at.isoformat() for i, at in ids.items()}
    # The next tick takes on from there: the cron run now due, and held through +135 s
    # the one-time run at +80 s and the interval's +78, +85, ... +134 s.
    again = dispatch_tick(db, publish, OPTIONS, now=NOW + 60 * S)
    assert (again.created, again.held) == (11, 10)
    assert [row.scheduled_for for row in rows(db, every_7)] == [
        NOW + (1 + 7 * k) * S for k in range(20)]


def test_a_pause_or_a_new_schedule_cancels_what_was_taken_ahead(
    db: sessionmaker[Session], broker: redis.Redis,
) -> None:
    every_7 = add_trigger(db, interval_s=7, start_at=NOW + S, next_run_at=NOW + S)
    once = add_trigger(db, run_at=NOW + 20 * S, next_run_at=NOW + 20 * S)
    dispatch_tick(db, publish, OPTIONS, now=NOW)
    at = NOW + 3 * S  # between the tick and the instants (the +1 s run is past: kept)
    with db.begin() as session:
        editing.update_trigger(session, "t1", "p1", every_7, {"interval_s": 60}, now=at)
        editing.pause_trigger(session, "t1", "p1", once, now=at)
    interval = rows(db, every_7)
    assert interval[0][:2] == (NOW + S, InvocationStatus.PENDING)
    assert [(row.status, row.last_error) for row in interval[1:]] == [
        (InvocationStatus.CANCELLED, RESCHEDULED_REASON)] * 10
    assert [(row.status, row.last_error) for row in rows(db, once)] == [
        (InvocationStatus.CANCELLED, DISABLED_REASON)]
    # The new schedule counts from its anchor, which the edit kept: +1 s, +61 s, ...
    assert next_run_at(db, every_7) == NOW + 61 * S


def test_a_held_run_whose_holder_died_is_published_again_by_the_sweep(
    db: sessionmaker[Session], broker: redis.Redis,
) -> None:
    once = add_trigger(db, run_at=NOW + 20 * S, next_run_at=NOW + 20 * S)
    dispatch_tick(db, publish, OPTIONS, now=NOW)
    broker.delete(RUN_QUEUE)  # a worker took the message and died holding it
    # Not stale until CRONBEAT_REPUBLISH_AFTER_S (60 s here) after its instant.
    assert dispatch_tick(db, publish, OPTIONS, now=NOW + 79 * S).republished == 0
    assert dispatch_tick(db, publish, OPTIONS, now=NOW + 81 * S).republished == 1
    with db.begin() as session:
        invocation_id = session.execute(select(Invocation.id)).scalar_one()
    assert queued(broker) == {str(invocation_id): None}  # due: no ETA this time
    assert rows(db, once)[0].status is InvocationStatus.PENDING


@pytest.mark.slow
def test_a_held_run_starts_at_its_instant_never_before_and_a_paused_one_not_at_all(
    db: sessionmaker[Session], broker: redis.Redis, start_worker: Any, receiver: Receiver,
) -> None:
    worker = start_worker()
    with db.begin() as session:
        now = session.execute(select(func.now())).scalar_one()
    instant = (now + 3 * S).replace(microsecond=0)
    runs = add_trigger(db, receiver, run_at=instant, next_run_at=instant, name="runs")
    paused = add_trigger(db, receiver, run_at=instant, next_run_at=instant, name="paused")
    report = dispatch_tick(db, publish, OPTIONS, now=now)
    assert report.held == 2
    with db.begin() as session:
        editing.pause_trigger(session, "t1", "p1", paused, now=now)
    receiver.wait_for(1, timeout_s=DEADLINE_S)
    # The paused run's message comes due too, and finds its run cancelled.
    deadline = time.monotonic() + DEADLINE_S
    while worker.log_text().count("run: not pending, nothing to do") < 1:
        assert time.monotonic() < deadline, worker.log_text()[-3000:]
        time.sleep(0.05)
    assert receiver.count == 1
    with db.begin() as session:
        started = session.execute(
            select(InvocationAttempt.started_at, InvocationAttempt.scheduled_for)
            .join(Invocation, Invocation.id == InvocationAttempt.invocation_id)
            .where(Invocation.trigger_id == runs)).one()
    assert started.scheduled_for == instant and started.started_at >= instant
    assert [row.status for row in rows(db, paused)] == [InvocationStatus.CANCELLED]


def test_a_one_time_trigger_taken_ahead_and_moved_runs_at_its_new_instant_only(
    db: sessionmaker[Session], broker: redis.Redis,
) -> None:
    once = add_trigger(db, run_at=NOW + 20 * S, next_run_at=NOW + 20 * S)
    dispatch_tick(db, publish, OPTIONS, now=NOW)  # taken ahead: disabled as fired
    with db.begin() as session:
        editing.update_trigger(session, "t1", "p1", once, {"run_at": NOW + 40 * S},
                               now=NOW + 3 * S)
        trigger = session.get_one(Trigger, once)
        assert (trigger.enabled, trigger.next_run_at) == (True, NOW + 40 * S)
    assert [(row.scheduled_for, row.status, row.last_error) for row in rows(db, once)] == [
        (NOW + 20 * S, InvocationStatus.CANCELLED, RESCHEDULED_REASON)]
    # The next tick takes the new instant ahead, once.
    assert dispatch_tick(db, publish, OPTIONS, now=NOW + 5 * S).held == 1
    assert [(row.scheduled_for, row.status) for row in rows(db, once)] == [
        (NOW + 20 * S, InvocationStatus.CANCELLED), (NOW + 40 * S, InvocationStatus.PENDING)]


def test_held_runs_past_the_tick_s_messages_wait_parked_until_their_instant(
    db: sessionmaker[Session], broker: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A burst of one-time runs at one instant: the tick's first messages go out with
    # their ETA; the rest wait in the database, parked, and no worker takes one early.
    monkeypatch.setattr(fairness, "TICK_MESSAGES", 2)
    with db.begin() as session:
        now = session.execute(select(func.now())).scalar_one()
    instant = now + 20 * S
    for _ in range(5):
        add_trigger(db, run_at=instant, next_run_at=instant)
    report = dispatch_tick(db, publish, OPTIONS, now=now)
    assert (report.created, report.held, report.parked, report.published) == (5, 2, 3, 2)
    assert set(queued(broker).values()) == {instant.isoformat()}
    with db.begin() as session:
        assert parking.take_parked(session, 10)[0] == []  # not before its instant
        session.execute(update(Invocation).values(run_after=now - S))  # ... time passes
    with db.begin() as session:
        assert len(parking.take_parked(session, 10)[0]) == 3
