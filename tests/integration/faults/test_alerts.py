"""Alerts are as durable as outcomes: a failed run's alert commits with its outcome, so a
worker killed, or PostgreSQL restarted, while it records them loses neither. Every
failed run has exactly one alert, delivered once.

The window is made by holding the ``alerts`` table locked in another transaction: a
finish then waits at its alerts' insert, after its outcomes' update (and the worker's
engine waits with it: the runs it had not claimed yet are delivered after the fault).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from app.enums import InvocationStatus
from app.models import Alert, Invocation
from tests.integration.faults.conftest import db_now, one_time, statuses, watch_tenants
from tests.support.fleet import PrivatePostgres, PrivateRedis, ProcfileProcess, wait_until
from tests.support.receiver import Receiver, Reply

pytestmark = pytest.mark.slow

RUNS = 100


def _waiting_on_the_alerts_lock(url: str) -> int:
    """Backends of this database waiting for a lock (the finishes at the alerts' insert)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'")).scalar_one())
    finally:
        engine.dispose()


def _failing_runs_wait_on_the_alerts_lock(
    db: sessionmaker[Session], database_url: str, receiver: Receiver,
    channel_receiver: Receiver,
) -> tuple[list[uuid.UUID], Session, int]:
    """RUNS runs that fail (503, one attempt), each of its own trigger, the first of them
    delivered while the alerts table is locked; returns their triggers, the session
    holding the lock, and how many were delivered (their finish waits at the lock)."""
    watch_tenants(db, channel_receiver)
    receiver.default = Reply(503, body="unavailable")
    holder = db()
    holder.execute(text("LOCK TABLE alerts IN SHARE ROW EXCLUSIVE MODE"))
    triggers = one_time(db, receiver.url(), db_now(db) + dt.timedelta(seconds=1), RUNS,
                        max_attempts=1)
    receiver.wait_for(1, timeout_s=60)
    wait_until(lambda: _waiting_on_the_alerts_lock(database_url) >= 1,
               "the finish waiting at the alerts' insert", 20)
    time.sleep(1.0)  # every delivery of the claimed batch has come back
    # Outcomes not committed: they wait with their alerts.
    assert statuses(db)[InvocationStatus.FAILED] == 0
    return triggers, holder, receiver.count


def _assert_one_alert_each(db: sessionmaker[Session], triggers: list[uuid.UUID],
                           channel_receiver: Receiver, receiver: Receiver) -> None:
    with db.begin() as session:
        alerts = session.execute(select(Alert.trigger_id, Alert.kind, Alert.status)).all()
    assert Counter((a.kind, a.status) for a in alerts) == {("failing", "delivered"): RUNS}
    assert Counter(a.trigger_id for a in alerts) == Counter(triggers)
    received = Counter(r.headers["webhook-id"] for r in channel_receiver.requests)
    assert len(received) == RUNS and set(received.values()) == {1}
    assert {json.loads(r.body)["type"] for r in channel_receiver.requests} == {
        "trigger.failing"}
    # Each run was delivered once: its one attempt, never again.
    assert set(Counter(r.headers["webhook-id"] for r in receiver.requests).values()) == {1}


def test_a_worker_killed_while_recording_failures_loses_no_alert(
    db: sessionmaker[Session], settings: object, receiver: Receiver,
    channel_receiver: Receiver, redis_server: PrivateRedis,
    fleet: Callable[..., dict[str, ProcfileProcess]],
) -> None:
    processes = fleet(("worker", "dispatcher", "beat"), redis_server)
    database_url = str(db.kw["bind"].url.render_as_string(hide_password=False))
    triggers, holder, delivered = _failing_runs_wait_on_the_alerts_lock(
        db, database_url, receiver, channel_receiver)
    processes["worker"].kill()
    killed_at = time.monotonic()
    holder.rollback()
    holder.close()

    # Nothing of the killed finishes committed: a new worker takes the dead worker's
    # runs back (their only attempt: failed, "worker lost") with their alerts, and
    # delivers the runs the dead one had not claimed (their messages sent again).
    fleet(("worker",), redis_server)
    wait_until(lambda: statuses(db) == {InvocationStatus.FAILED: RUNS}, "every run failed",
               90, every_s=0.5)
    taken_back_s = time.monotonic() - killed_at
    wait_until(lambda: channel_receiver.count >= RUNS, "the alerts delivered", 60)
    time.sleep(2)  # a duplicate would show now
    _assert_one_alert_each(db, triggers, channel_receiver, receiver)
    with db.begin() as session:
        errors = Counter(session.execute(select(Invocation.last_error)).scalars())
    # Counter to Counter: a reason with no run counts as zero (all may have been
    # delivered before the kill).
    assert errors == Counter({"worker lost: its process stopped while the attempt ran":
                              delivered, "gave up after 1 attempts: HTTP 503": RUNS - delivered})
    assert taken_back_s < 60, taken_back_s


def test_postgres_restarted_while_recording_failures_loses_no_alert(
    pg_db: sessionmaker[Session], private_pg: PrivatePostgres, receiver: Receiver,
    channel_receiver: Receiver, redis_server: PrivateRedis,
    fleet: Callable[..., dict[str, ProcfileProcess]],
) -> None:
    processes = fleet(("worker", "dispatcher", "beat"), redis_server,
                      private_pg.url("cronbeat"))
    triggers, holder, _ = _failing_runs_wait_on_the_alerts_lock(
        pg_db, private_pg.url("cronbeat"), receiver, channel_receiver)
    private_pg.stop_immediate()  # the lock's holder goes with every other backend
    holder.invalidate()
    time.sleep(2)
    private_pg.start()

    wait_until(lambda: statuses(pg_db) == {InvocationStatus.FAILED: RUNS},
               "every run failed", 90, every_s=0.5)
    wait_until(lambda: channel_receiver.count >= RUNS, "the alerts delivered", 60)
    time.sleep(2)
    _assert_one_alert_each(pg_db, triggers, channel_receiver, receiver)
    with pg_db.begin() as session:
        errors = set(session.execute(select(Invocation.last_error)).scalars())
        attempts = session.execute(select(func.max(Invocation.attempt))).scalar_one()
    # Recorded by the worker that delivered them, once the database was back.
    assert errors == {"gave up after 1 attempts: HTTP 503"}, errors
    assert attempts == 1
    assert processes["worker"].alive
