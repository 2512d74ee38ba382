"""Alerts end to end: real PostgreSQL and Redis, real workers, loopback receivers.

One receiver is the trigger's target, another the project's alert channel. Each test
counts exactly what reached the channel (and waits a few watchdog passes more to see
that nothing else arrives), and verifies each alert's Standard Webhooks signature with
the channel's secret.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from app.config import Settings
from app.enums import InvocationStatus
from app.firing.dispatch import DispatchOptions, dispatch_tick
from app.models import Alert, AlertChannel, AlertRule, Invocation
from tasks.alerts import watch_once
from tests.support.receiver import Receiver, Reply, running_receiver
from tests.support.runs import add_invocation, add_trigger, new_secret, run, wait_final
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.slow

T0 = dt.datetime(2026, 3, 7, 5, 0, tzinfo=dt.UTC)
FIVE_MINUTES = dt.timedelta(minutes=5)


@pytest.fixture
def channel_receiver() -> Any:
    yield from running_receiver()


def add_channel(db: sessionmaker[Session], receiver: Receiver, *, tenant_id: str = "t1",
                project_id: str = "p1", secret: str | None = None) -> str:
    secret = secret or new_secret()
    with db.begin() as session:
        session.execute(insert(AlertChannel).values(
            tenant_id=tenant_id, project_id=project_id, name=f"ops-{uuid.uuid4().hex[:6]}",
            url=receiver.url("/alerts"), signing_secret=secret))
    return secret


def set_rule(db: sessionmaker[Session], trigger_id: uuid.UUID | None = None,
             **values: Any) -> None:
    rule = {"on_failure": True, "failures_in_a_row": 1, "on_missed": True,
            "late_after_s": None, "on_recovery": True, "on_didnt_run": True, **values}
    with db.begin() as session:
        session.execute(insert(AlertRule).values(
            tenant_id="t1", project_id="p1", trigger_id=trigger_id, **rule))


def watched_trigger(db: sessionmaker[Session], receiver: Receiver | None = None,
                    **values: Any) -> uuid.UUID:
    """A trigger whose next occurrence lies ahead, so the watchdog finds it fine."""
    values.setdefault("next_run_at", dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    return add_trigger(db, receiver, **values)


def alerts_received(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """Every alert the channel received, each verified against the channel's secret."""
    bodies = []
    for request in receiver.requests:
        headers = {name.lower(): value for name, value in request.headers.items()}
        Webhook(secret).verify(request.body, headers)
        body = json.loads(request.body)
        assert headers["webhook-id"] == body["alert_id"]
        bodies.append(body)
    return bodies


def settle(receiver: Receiver, count: int, quiet_s: float = 3.0) -> None:
    """Wait for ``count`` requests, then ``quiet_s`` more, so that extras would show."""
    receiver.wait_for(count, timeout_s=30)
    time.sleep(quiet_s)


def test_three_failures_then_a_success_send_one_failure_and_one_recovery_alert(
    db, celery_worker: WorkerProcess, celery_client, receiver: Receiver,
    channel_receiver: Receiver,
) -> None:
    secret = add_channel(db, channel_receiver)
    set_rule(db, failures_in_a_row=3)
    trigger_id = watched_trigger(db, receiver, name="billing", max_attempts=1)
    receiver.script(Reply(500), Reply(500), Reply(500), Reply(200))
    ids = [add_invocation(db, trigger_id, T0 + n * FIVE_MINUTES) for n in range(4)]
    statuses = [run(celery_client, db, invocation_id).status for invocation_id in ids]
    assert statuses == [InvocationStatus.FAILED] * 3 + [InvocationStatus.SUCCEEDED]

    settle(channel_receiver, 2)
    # In the order they were raised: arrival may differ (README: order by created_at).
    failing, recovered = sorted(alerts_received(channel_receiver, secret),
                                key=lambda alert: alert["created_at"])
    assert channel_receiver.count == 2
    assert failing["type"] == "trigger.failing"
    assert (failing["tenant_id"], failing["project_id"]) == ("t1", "p1")
    assert failing["trigger"] == {"id": str(trigger_id), "name": "billing"}
    assert failing["invocation"] == {
        "id": str(ids[2]), "scheduled_for": "2026-03-07T05:10:00Z", "status": "failed",
        "last_error": "HTTP 500"}
    assert failing["consecutive_failures"] == 3
    assert failing["condition"] == "failing"
    assert failing["link"] == f"/console/projects/p1/triggers/{trigger_id}"
    assert recovered["type"] == "trigger.recovered"
    assert recovered["invocation"]["id"] == str(ids[3])
    assert recovered["invocation"]["status"] == "succeeded"
    assert (recovered["condition"], recovered["consecutive_failures"]) == (None, 0)
    with db.begin() as session:
        rows = session.execute(select(Alert.kind, Alert.status, Alert.attempts,
                                      Alert.response_status).order_by(Alert.created_at)).all()
    assert [tuple(row) for row in rows] == [("failing", "delivered", 1, 200),
                                           ("recovered", "delivered", 1, 200)]


def test_manual_runs_and_other_projects_raise_no_alert(
    db, celery_worker: WorkerProcess, celery_client, receiver: Receiver,
    channel_receiver: Receiver,
) -> None:
    add_channel(db, channel_receiver)
    watched = watched_trigger(db, receiver, max_attempts=1)
    unwatched = watched_trigger(db, receiver, max_attempts=1, project_id="p2")
    receiver.script(Reply(500), Reply(500))
    manual = add_invocation(db, watched, manual=True)
    other = add_invocation(db, unwatched, project_id="p2")
    assert run(celery_client, db, manual).status is InvocationStatus.FAILED
    assert run(celery_client, db, other).status is InvocationStatus.FAILED
    time.sleep(2)
    assert channel_receiver.count == 0
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(Alert)) == 0


def test_an_alert_channel_that_hangs_never_holds_up_runs_and_its_alert_is_retried(
    db, celery_worker: WorkerProcess, celery_client, receiver: Receiver,
    channel_receiver: Receiver,
) -> None:
    secret = add_channel(db, channel_receiver)
    trigger_id = watched_trigger(db, receiver, max_attempts=1)
    released = channel_receiver.hold_next()
    receiver.script(Reply(500))
    failed = add_invocation(db, trigger_id, T0)
    assert run(celery_client, db, failed).status is InvocationStatus.FAILED
    channel_receiver.wait_for(1, timeout_s=20)
    started = time.monotonic()
    # While the alert's first attempt hangs, the trigger's runs go on.
    later = [add_invocation(db, trigger_id, T0 + n * FIVE_MINUTES) for n in (1, 2, 3)]
    assert [run(celery_client, db, i).status for i in later] == [InvocationStatus.SUCCEEDED] * 3
    assert time.monotonic() - started < 8
    # The attempt times out after 10 s; the retry 5 s later is answered.
    settle(channel_receiver, 3, quiet_s=2)
    released.set()
    received = alerts_received(channel_receiver, secret)
    # The recovery was delivered while the failure's first attempt hung: alerts carry
    # created_at for a receiver that orders them.
    failing = [body for body in received if body["type"] == "trigger.failing"]
    recovered = [body for body in received if body["type"] == "trigger.recovered"]
    assert len(failing) == 2 and failing[0] == failing[1]
    assert len(recovered) == 1
    assert failing[0]["created_at"] < recovered[0]["created_at"]
    with db.begin() as session:
        rows = session.execute(select(Alert.kind, Alert.status, Alert.attempts)
                               .order_by(Alert.created_at)).all()
    assert [tuple(row) for row in rows] == [("failing", "delivered", 2),
                                           ("recovered", "delivered", 1)]


def _tick(db: sessionmaker[Session], now: dt.datetime) -> Any:
    return dispatch_tick(db, len, DispatchOptions(min_grace_s=90), now=now)


def test_missed_runs_alert_once(
    db, settings: Settings, celery_worker: WorkerProcess, celery_client,
    channel_receiver: Receiver,
) -> None:
    secret = add_channel(db, channel_receiver)
    # The ticks below run at instants of their own, long past: the watchdog would find
    # the trigger overdue by the wall clock, so this project does not ask for that.
    set_rule(db, on_didnt_run=False)
    trigger_id = add_trigger(db, name="hourly-report", misfire_policy="skip",
                             misfire_grace_s=0, next_run_at=T0)
    # 05:00 to 06:00, every five minutes: all older than the 90 s grace at 06:02:30.
    report = _tick(db, T0 + dt.timedelta(minutes=62, seconds=30))
    assert (report.missed, report.created) == (13, 0)
    watch_once(db, settings)
    settle(channel_receiver, 1)
    # Missed again later: the trigger is still in "missed", nothing new.
    assert _tick(db, T0 + dt.timedelta(minutes=72, seconds=30)).missed == 2
    watch_once(db, settings)
    time.sleep(3)
    [alert] = alerts_received(channel_receiver, secret)
    assert alert["type"] == "trigger.missed"
    assert alert["trigger"]["name"] == "hourly-report"
    assert alert["invocation"]["status"] == "missed"
    assert alert["occurrence"] == "2026-03-07T06:00:00Z"
    with db.begin() as session:
        newest = session.scalar(select(Invocation.id).where(
            Invocation.trigger_id == trigger_id, Invocation.scheduled_for
            == dt.datetime.fromisoformat(alert["occurrence"])))
    assert alert["invocation"]["id"] == str(newest)


def test_a_stopped_dispatcher_past_the_grace_raises_one_didnt_run_alert(
    db, start_worker: Any, celery_client, receiver: Receiver, channel_receiver: Receiver,
) -> None:
    secret = add_channel(db, channel_receiver)
    with db.begin() as session:
        now = session.scalar(select(func.now()))
    # No tick runs in this test: nothing records the trigger's occurrence. The grace is
    # the dispatcher's minimum (a tick, 60 s, plus 30 s), so 120 s ago is past it.
    overdue = add_trigger(db, receiver, name="silent", misfire_grace_s=0,
                          next_run_at=now - dt.timedelta(seconds=120))
    within = add_trigger(db, receiver, misfire_grace_s=600,
                         next_run_at=now - dt.timedelta(seconds=120))
    # Recorded, but never started by any worker (its message is lost).
    stranded = add_trigger(db, receiver, name="stranded", misfire_grace_s=0,
                           next_run_at=now + dt.timedelta(hours=1))
    stuck = add_invocation(db, stranded, now - dt.timedelta(minutes=10))
    worker = start_worker(CRONBEAT_ALERT_WATCH_INTERVAL_S="1")
    settle(channel_receiver, 2, quiet_s=4)
    alerts = sorted(alerts_received(channel_receiver, secret), key=lambda a: a["trigger"]["name"])
    assert channel_receiver.count == 2
    assert [(a["type"], a["trigger"]["id"]) for a in alerts] == [
        ("trigger.didnt_run", str(overdue)), ("trigger.didnt_run", str(stranded))]
    assert alerts[0]["invocation"] is None
    assert alerts[1]["invocation"]["id"] == str(stuck)
    assert alerts[1]["invocation"]["status"] == "pending"
    assert str(within) not in {a["trigger"]["id"] for a in alerts}
    # The stranded run finally runs: one recovery.
    assert run(celery_client, db, stuck).status is InvocationStatus.SUCCEEDED
    settle(channel_receiver, 3, quiet_s=2)
    assert alerts_received(channel_receiver, secret)[2]["type"] == "trigger.recovered"
    assert worker.alive
    assert wait_final(db, stuck).status is InvocationStatus.SUCCEEDED
