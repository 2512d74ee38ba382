"""Alert delivery's core and the watchdog, called directly: real PostgreSQL, a loopback
receiver, and (for the late start) a real worker.

The waits between attempts are the database's: a test moves ``next_attempt_at`` back
instead of sleeping through them.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.alerting import delivery
from app.alerting.delivery import MAX_ATTEMPTS, RETRY_DELAYS_S, deliver_alert
from app.config import Settings
from app.enums import InvocationStatus
from app.firing.dispatch import DispatchOptions, dispatch_tick
from app.models import Alert, AlertChannel, AlertRule, Invocation, Trigger
from tasks.alerts import SETTLE, watch_once
from tests.support.receiver import Receiver, Reply
from tests.support.runs import add_invocation, add_trigger, new_secret, run
from tests.support.worker import WorkerProcess

T0 = dt.datetime(2026, 3, 7, 5, 0, tzinfo=dt.UTC)


def _channel(db: sessionmaker[Session], receiver: Receiver) -> uuid.UUID:
    with db.begin() as session:
        return session.execute(insert(AlertChannel).values(
            tenant_id="t1", project_id="p1", name="ops", url=receiver.url("/alerts"),
            signing_secret=new_secret()).returning(AlertChannel.id)).scalar_one()


def _alert(db: sessionmaker[Session], channel_id: uuid.UUID, **values: Any) -> uuid.UUID:
    alert_id = uuid.uuid4()
    with db.begin() as session:
        session.execute(insert(Alert).values(
            id=alert_id, tenant_id="t1", project_id="p1", channel_id=channel_id,
            kind="failing", body={"type": "trigger.failing", "alert_id": str(alert_id)},
            **values))
    return alert_id


def _row(db: sessionmaker[Session], alert_id: uuid.UUID) -> Alert:
    with db.begin() as session:
        return session.get_one(Alert, alert_id)


def _due_now(db: sessionmaker[Session], alert_id: uuid.UUID) -> None:
    with db.begin() as session:
        session.execute(update(Alert).where(Alert.id == alert_id)
                        .values(next_attempt_at=func.now()))


def _deliver(db: sessionmaker[Session], alert_id: uuid.UUID) -> delivery.AlertOutcome:
    return deliver_alert(db, alert_id, allow_private=True, max_countdown_s=60.0)


def test_an_alert_is_retried_with_backoff_and_fails_after_its_last_attempt(
    db: sessionmaker[Session], receiver: Receiver,
) -> None:
    alert_id = _alert(db, _channel(db, receiver))
    receiver.script(*[Reply(503)] * MAX_ATTEMPTS)
    outcomes = []
    for _ in range(MAX_ATTEMPTS):
        outcomes.append(_deliver(db, alert_id))
        # A second message for the same attempt finds nothing to do.
        assert _deliver(db, alert_id).status is None
        _due_now(db, alert_id)
    assert [(o.status, o.attempt, o.retry_in_s) for o in outcomes] == [
        ("pending", 1, 5.0), ("pending", 2, 30.0), ("pending", 3, None),
        ("pending", 4, None), ("pending", 5, None), ("failed", 6, None)]
    assert receiver.count == MAX_ATTEMPTS
    row = _row(db, alert_id)
    assert (row.status, row.attempts, row.response_status, row.last_error) == (
        "failed", 6, 503, "gave up after 6 attempts: HTTP 503")
    assert row.finished_at is not None
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert RETRY_DELAYS_S == (5.0, 30.0, 120.0, 600.0, 1800.0)


def test_a_retry_waits_in_the_database_and_a_permanent_answer_fails_at_once(
    db: sessionmaker[Session], receiver: Receiver,
) -> None:
    channel_id = _channel(db, receiver)
    waiting, refused = _alert(db, channel_id), _alert(db, channel_id)
    receiver.script(Reply(500), Reply(410))
    assert _deliver(db, waiting).status == "pending"
    with db.begin() as session:
        wait_s = session.scalar(select(func.extract(
            "epoch", Alert.next_attempt_at - func.now())).where(Alert.id == waiting))
    assert 4.0 < float(wait_s) <= 5.0
    assert _deliver(db, waiting).status is None  # early: not due for 5 s
    outcome = _deliver(db, refused)
    assert (outcome.status, outcome.error, outcome.response_status) == ("failed", "HTTP 410", 410)
    assert receiver.count == 2


def test_an_alert_whose_channel_is_gone_or_disabled_fails_without_a_request(
    db: sessionmaker[Session], receiver: Receiver,
) -> None:
    channel_id = _channel(db, receiver)
    orphan, off = _alert(db, channel_id), _alert(db, channel_id)
    with db.begin() as session:
        session.execute(update(AlertChannel).values(enabled=False))
    assert _deliver(db, off).error == "the alert's channel is disabled"
    with db.begin() as session:
        session.execute(delete(AlertChannel))
    assert _deliver(db, orphan).error == "the alert's channel was deleted"
    assert (_row(db, orphan).status, _row(db, off).status) == ("failed", "failed")
    assert receiver.count == 0


def test_the_watchdog_publishes_what_was_never_published_and_then_waits_for_it(
    db: sessionmaker[Session], settings: Settings, broker: Any,
) -> None:
    broker.delete("cronbeat.alerts")
    with db.begin() as session:
        now = session.scalar(select(func.now()))
    channel = uuid.uuid4()
    lost = _alert(db, channel)  # raised by the dispatcher: published_at NULL
    sent = _alert(db, channel, published_at=now)  # its message is on its way
    stale = _alert(db, channel, published_at=now - SETTLE - dt.timedelta(seconds=1))
    _alert(db, channel, next_attempt_at=now + dt.timedelta(minutes=5))  # a retry's wait
    _alert(db, channel, status="delivered")
    try:
        assert watch_once(db, settings) == {"didnt_run": 0, "published": 2}
        assert watch_once(db, settings) == {"didnt_run": 0, "published": 0}
        messages = [json.loads(raw) for raw in broker.lrange("cronbeat.alerts", 0, -1)]
        assert sorted(m["headers"]["id"] for m in messages) == sorted([str(lost), str(stale)])
        assert {m["headers"]["task"] for m in messages} == {"cronbeat.deliver_alert"}
        assert _row(db, sent).published_at == now
    finally:
        broker.delete("cronbeat.alerts")


def test_a_run_failed_by_its_lost_lease_raises_a_failure_alert(
    db: sessionmaker[Session], receiver: Receiver,
) -> None:
    _channel(db, receiver)
    with db.begin() as session:
        now = session.scalar(select(func.now()))
    trigger_id = add_trigger(db, max_attempts=1, next_run_at=now + dt.timedelta(days=1))
    invocation_id = add_invocation(db, trigger_id, T0, status="running", attempt=1,
                                   lease_expires_at=now - dt.timedelta(seconds=1))
    report = dispatch_tick(db, len, DispatchOptions(), now=now)
    assert report.leases_expired == 0  # failed, not re-published
    with db.begin() as session:
        assert session.get_one(Invocation, invocation_id).status is InvocationStatus.FAILED
        [alert] = session.execute(select(Alert)).scalars()
    assert (alert.kind, alert.invocation_id, alert.trigger_id) == (
        "failing", invocation_id, trigger_id)
    assert alert.body["invocation"]["last_error"] == (
        "worker lost: the lease expired before the attempt finished")
    assert alert.published_at is None  # the watchdog publishes it


@pytest.mark.slow
def test_a_late_start_alerts_once_and_an_on_time_success_recovers(
    db: sessionmaker[Session], celery_worker: WorkerProcess, celery_client: Any,
    receiver: Receiver,
) -> None:
    _channel(db, receiver)
    with db.begin() as session:
        now = session.scalar(select(func.now()))
        session.execute(insert(AlertRule).values(
            tenant_id="t1", project_id="p1", on_failure=True, failures_in_a_row=1,
            on_missed=True, late_after_s=60, on_recovery=True, on_didnt_run=False))
    trigger_id = add_trigger(db, receiver, next_run_at=now + dt.timedelta(days=1))
    late = [add_invocation(db, trigger_id, now - dt.timedelta(seconds=s)) for s in (300, 200)]
    on_time = add_invocation(db, trigger_id, now)
    for invocation_id in (*late, on_time):
        assert run(celery_client, db, invocation_id).status is InvocationStatus.SUCCEEDED
    with db.begin() as session:
        rows = session.execute(select(Alert.kind, Alert.invocation_id)
                               .order_by(Alert.created_at)).all()
    assert [tuple(row) for row in rows] == [("late", late[0]), ("recovered", on_time)]
    with db.begin() as session:
        body = session.scalars(select(Alert.body).where(Alert.kind == "late")).one()
    assert body["late_s"] > 300


def test_an_occurrence_that_did_not_run_is_reported_once_even_when_the_rule_is_silent(
    db: sessionmaker[Session], settings: Settings, receiver: Receiver,
) -> None:
    _channel(db, receiver)
    with db.begin() as session:
        now = session.scalar(select(func.now()))
        session.execute(insert(AlertRule).values(
            tenant_id="t1", project_id="p1", on_failure=True, failures_in_a_row=1,
            on_missed=True, late_after_s=None, on_recovery=True, on_didnt_run=False))
    overdue = add_trigger(db, next_run_at=now - dt.timedelta(hours=1))
    assert watch_once(db, settings) == {"didnt_run": 1, "published": 0}
    # Nothing new: the same occurrence is not reported again, so a silent rule's
    # triggers cannot fill every pass.
    assert watch_once(db, settings) == {"didnt_run": 0, "published": 0}
    # A later occurrence that did not run either is a new report.
    with db.begin() as session:
        session.execute(update(Trigger).where(Trigger.id == overdue)
                        .values(next_run_at=now - dt.timedelta(minutes=30)))
    assert watch_once(db, settings) == {"didnt_run": 1, "published": 0}
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(Alert)) == 0
