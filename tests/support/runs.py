"""Helpers for the run_trigger integration tests: rows as the dispatcher records them.

Triggers and invocations are inserted directly (pending, as a tick leaves them); the
helpers read them back and wait, with a deadline, for an invocation's final state.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import time
import uuid
from typing import Any

from celery import Celery
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from app.enums import InvocationStatus
from app.models import Invocation, InvocationAttempt, Trigger
from app.queries import attempts as attempt_statements
from app.queries import leases
from messaging.publisher import publish_runs
from tests.support.receiver import Receiver

T0 = dt.datetime(2026, 3, 7, 5, 0, tzinfo=dt.UTC)
DEADLINE_S = 20.0


def add_trigger(
    db: sessionmaker[Session], receiver: Receiver | None = None, **values: Any
) -> uuid.UUID:
    """Insert a trigger as a save leaves it (every test's one trigger factory): a cron
    trigger due at T0 unless ``values`` say otherwise (a ``run_at`` makes it one-time, an
    ``interval_s`` an interval)."""
    if "run_at" in values or "interval_s" in values:
        values.setdefault("cron_expression", None)
    row: dict[str, Any] = {
        "tenant_id": "t1",
        "project_id": "p1",
        "name": f"trigger-{uuid.uuid4().hex[:8]}",
        "cron_expression": "*/5 * * * *",
        "next_run_at": T0,
        "target_kind": "webhook",
        "webhook_url": receiver.url() if receiver else "https://example.com/hook",
        "payload": {"report": "daily"},
        "max_attempts": 3,
        "backoff_base_s": 0,
        "backoff_cap_s": 0,
        "timeout_s": 5,
    }
    row.update(values)
    with db.begin() as session:
        return session.execute(insert(Trigger).values(**row).returning(Trigger.id)).scalar_one()


def add_invocation(
    db: sessionmaker[Session], trigger_id: uuid.UUID, scheduled_for: dt.datetime = T0,
    **values: Any,
) -> uuid.UUID:
    row = {"trigger_id": trigger_id, "tenant_id": "t1", "project_id": "p1",
           "scheduled_for": scheduled_for, **values}
    with db.begin() as session:
        return session.execute(
            insert(Invocation).values(**row).returning(Invocation.id)
        ).scalar_one()


def load(db: sessionmaker[Session], invocation_id: uuid.UUID) -> Invocation:
    with db.begin() as session:
        return session.get_one(Invocation, invocation_id)


def attempts(db: sessionmaker[Session], invocation_id: uuid.UUID) -> list[tuple[Any, ...]]:
    """(number, outcome, response_status, error, deployment_id, finished?) per attempt."""
    with db.begin() as session:
        rows = session.execute(
            select(InvocationAttempt)
            .where(InvocationAttempt.invocation_id == invocation_id)
            .order_by(InvocationAttempt.number)
        ).scalars()
        return [(a.number, a.outcome, a.response_status, a.error, a.deployment_id,
                 a.finished_at is not None) for a in rows]


def wait_final(db: sessionmaker[Session], invocation_id: uuid.UUID) -> Invocation:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        invocation = load(db, invocation_id)
        if invocation.status.is_final:
            return invocation
        time.sleep(0.05)
    raise AssertionError(f"invocation still {invocation.status} after {DEADLINE_S} s")


def run(
    celery_client: Celery, db: sessionmaker[Session], invocation_id: uuid.UUID
) -> Invocation:
    publish_runs(celery_client, [invocation_id])
    return wait_final(db, invocation_id)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def task_done(invocation_id: uuid.UUID) -> str:
    return rf"run_trigger\[{invocation_id}\] done"


def no_task(name: str, args: list[Any], kwargs: dict[str, Any], queue: str,
            headers: dict[str, Any], wait_s: float | None) -> None:
    """A send_task for tests whose trigger has no task target."""
    raise AssertionError("no task target here")


def finish_for_retry(session: Session, invocation_id: uuid.UUID, attempt: int, *,
                     delay_s: float, error: str, response_status: int | None
                     ) -> InvocationStatus | None:
    """Record a transient failure of ``attempt`` with the live finish statement (the
    engine's, attempts.finish_many, for a batch of one); the invocation's new status
    (pending for the retry, cancelled if a cancel was asked meanwhile), None if the
    attempt no longer held it."""
    day = session.execute(select(Invocation.scheduled_for).where(
        Invocation.id == invocation_id)).scalar_one()
    left, = attempt_statements.finish_many(session, [attempt_statements.Finish(
        invocation_id=invocation_id, scheduled_for=day, attempt=attempt, status=None,
        retry_delay_s=delay_s, published=True, error=error, attempt_error=error,
        lost_error=f"{error}; finished after its lease was taken back", outcome="error",
        response_status=response_status, response_excerpt=None)])
    return left


def claim(session: Session, invocation_id: uuid.UUID, *, deployment_id: str | None = None,
          tenant_cap: int = 32) -> int | None:
    """Claim the invocation with the live claim statement, as the single-run path does
    past its checks (its locks first: the fence and, with a cap, the tenant's); the new
    attempt's number, None if it was not claimable. The caller commits."""
    key = (invocation_id, leases.day_of(session, invocation_id))
    attempt_statements.lock_many(session, [key], tenant_cap)
    claimed = attempt_statements.claim_many(session, [key], deployment_id, tenant_cap,
                                  overlap_checked=True)
    return claimed[0].attempt if claimed else None


def wait_for_a_lock_wait(db: sessionmaker[Session], what: str, *, advisory: bool = False
                         ) -> None:
    """Wait until a session of the database waits on a lock (an advisory one only, with
    ``advisory``): the tightest interleaving of a race. Fails after DEADLINE_S."""
    query = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
             " AND wait_event_type = 'Lock'"
             + (" AND wait_event = 'advisory'" if advisory else ""))
    deadline = time.monotonic() + DEADLINE_S
    with db() as observer:
        while not observer.scalar(text(query)):
            assert time.monotonic() < deadline, f"never: {what}"
            time.sleep(0.02)
            observer.rollback()  # a fresh snapshot of pg_stat_activity
