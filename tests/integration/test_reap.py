"""Dead workers' runs are taken back (app.firing.reap), live workers' never: the live
statement against real PostgreSQL, with registry rows of live and dead processes."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.alerting.rules import AlertKind
from app.enums import InvocationStatus, ProcessKind, ProcessRole
from app.firing.batch import start_batch
from app.firing.reap import take_back_dead
from app.models import Alert, AlertChannel, Invocation, InvocationAttempt
from tests.support.processes import register
from tests.support.runs import T0, add_invocation, add_trigger, new_secret


def _claimed_by(db: sessionmaker[Session], settings: object, worker: uuid.UUID,
                count: int, **trigger: object) -> list[uuid.UUID]:
    """``count`` runs claimed (running) by the live claim statement, leased by ``worker``."""
    trigger_id = add_trigger(db, **trigger)
    ids = [add_invocation(db, trigger_id, T0 + dt.timedelta(minutes=n)) for n in range(count)]
    with db.begin() as session:
        keys = [(row.id, row.scheduled_for) for row in session.execute(
            select(Invocation.id, Invocation.scheduled_for).where(Invocation.id.in_(ids)))]
    started, _ = start_batch(db, settings, keys, worker)  # type: ignore[arg-type]
    assert len(started) == count
    return ids


def _statuses(db: sessionmaker[Session], ids: list[uuid.UUID]) -> list[InvocationStatus]:
    with db.begin() as session:
        return list(session.execute(select(Invocation.status).where(
            Invocation.id.in_(ids)).order_by(Invocation.scheduled_for)).scalars())


def test_only_the_runs_of_workers_not_seen_for_30_s_are_taken_back(db, settings) -> None:
    live = register(db, "v1", ProcessKind.WORKER, role=ProcessRole.ACTIVE, seen_s_ago=25)
    dead = register(db, "v1", ProcessKind.WORKER, role=ProcessRole.ACTIVE, seen_s_ago=31)
    gone = uuid.uuid4()  # its row was deleted (a clean exit, or expired)
    of_live = _claimed_by(db, settings, live, 3)
    of_dead = _claimed_by(db, settings, dead, 2)
    of_gone = _claimed_by(db, settings, gone, 1, max_attempts=1)

    taken, failed, _ = take_back_dead(db, None)

    assert sorted(key.id for key in taken) == sorted(of_dead)
    assert failed == 1
    assert _statuses(db, of_live) == [InvocationStatus.RUNNING] * 3
    assert _statuses(db, of_dead) == [InvocationStatus.PENDING] * 2
    assert _statuses(db, of_gone) == [InvocationStatus.FAILED]
    with db.begin() as session:
        errors = set(session.execute(select(Invocation.last_error).where(
            Invocation.id.in_(of_dead + of_gone))).scalars())
        outcomes = set(session.execute(select(InvocationAttempt.outcome).where(
            InvocationAttempt.invocation_id.in_(of_dead + of_gone))).scalars())
    assert errors == {"worker lost: its process stopped while the attempt ran"}
    assert outcomes == {"abandoned"}
    # Once: a second pass finds nothing more.
    assert take_back_dead(db, None)[:2] == ([], 0)


def test_a_run_failed_for_its_dead_worker_raises_its_alert_in_the_same_transaction(
    db, settings
) -> None:
    with db.begin() as session:
        session.execute(insert(AlertChannel).values(
            tenant_id="t1", project_id="p1", name="ops", url="https://ops.example/alerts",
            signing_secret=new_secret()))
    dead = register(db, "v1", ProcessKind.WORKER, role=ProcessRole.ACTIVE, seen_s_ago=60)
    [run] = _claimed_by(db, settings, dead, 1, max_attempts=1)

    assert take_back_dead(db, None)[:2] == ([], 1)

    with db.begin() as session:
        alerts = session.execute(select(Alert.kind, Alert.invocation_id)).all()
    assert alerts == [(AlertKind.FAILING.value, run)]
