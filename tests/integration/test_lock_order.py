"""Multi-row locks follow one order, so concurrent editing calls never deadlock.

Each test runs two real transactions at once (threads, their own connections) that
lock overlapping sets of rows, many rounds over, and counts the errors: a deadlock
would abort one of them (PostgreSQL's "deadlock detected"), which the API answers 500.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import threading
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from app.editing import sync, triggers
from app.enums import InvocationStatus
from app.models import Invocation, Trigger
from app.queries import claims
from app.queries.cancellation import cancel_pending

pytestmark = pytest.mark.slow

ROUNDS = 6
TRIGGERS = 120
INVOCATIONS = 1000


def _race(db: sessionmaker[Session], *work: Callable[[Session], object],
          index_scans: bool = False) -> list[str]:
    """Run each callable in its own transaction, all released at once; return the errors.

    ``index_scans`` makes the planner walk indexes rather than the heap, as it does on a
    big table: each statement then locks rows in its own index's order.
    """
    barrier = threading.Barrier(len(work))
    errors: list[str] = []

    def run(job: Callable[[Session], object]) -> None:
        barrier.wait()
        try:
            with db.begin() as session:
                if index_scans:
                    session.execute(text("SET LOCAL enable_seqscan = off"))
                    session.execute(text("SET LOCAL enable_bitmapscan = off"))
                job(session)
        except Exception as exc:  # the point is to see any of them
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")

    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def _now(db: sessionmaker[Session]) -> dt.datetime:
    with db.begin() as session:
        return session.execute(select(func.now())).scalar_one()


def _definition(name: str, description: str = "") -> dict[str, object]:
    return {"name": name, "cron_expression": "*/5 * * * *", "target_kind": "webhook",
            "webhook_url": "https://example.com/hook", "ref": "deploy-1",
            "description": description}


def test_a_sync_and_a_delete_by_ref_of_one_project_never_deadlock(
    db: sessionmaker[Session],
) -> None:
    rng = random.Random(7)
    errors: list[str] = []
    for round_number in range(ROUNDS):
        now = _now(db)
        names = [f"job-{n:04d}" for n in range(TRIGGERS)]
        rng.shuffle(names)  # row order differs from name order
        with db.begin() as session:
            for name in names:
                triggers.create_trigger(session, "t1", "p1", _definition(name), now=now)
        desired = [_definition(name, f"round {round_number}") for name in sorted(names)]
        errors += _race(
            db,
            functools.partial(sync.sync_triggers, tenant_id="t1", project_id="p1",
                              desired=desired, now=now),
            functools.partial(triggers.delete_triggers_by_ref, tenant_id="t1",
                              project_id="p1", ref="deploy-1", now=now),
        )
        with db.begin() as session:
            left = session.execute(select(func.count()).select_from(Trigger)).scalar_one()
            # Whichever went second saw the first one's result: all gone, or all there.
            assert left in (0, TRIGGERS)
            session.execute(Trigger.__table__.delete())
    assert errors == []


def _pending_runs(db: sessionmaker[Session], count: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    now = _now(db)
    with db.begin() as session:
        trigger = triggers.create_trigger(
            session, "t1", "p1", _definition(f"t-{uuid.uuid4().hex[:8]}"), now=now)
        start = now - dt.timedelta(days=30)
        ids = list(session.execute(
            insert(Invocation).returning(Invocation.id),
            [{"trigger_id": trigger.id, "tenant_id": "t1", "project_id": "p1",
              "scheduled_for": start + dt.timedelta(minutes=n)} for n in range(count)],
        ).scalars())
    return trigger.id, ids


def test_marking_runs_published_never_waits_on_a_row_a_cancel_holds(
    db: sessionmaker[Session],
) -> None:
    # The deadlock this prevents: a cancel (in trigger/time order) holds run A and wants
    # run B, while mark_published (in id order) holds B and waits for A. Here the cancel
    # side holds one run and then wants all the others; mark_published must neither wait
    # for the held one nor keep the others from the cancel.
    trigger_id, ids = _pending_runs(db, 50)
    held = max(ids)
    now = _now(db)
    published: list[int] = []
    with db.begin() as cancelling:
        cancelling.execute(select(Invocation.id).where(Invocation.id == held)
                           .with_for_update())
        marker = threading.Thread(target=lambda: published.append(
            _mark(db, ids, now)))
        marker.start()
        marker.join(timeout=10)
        assert not marker.is_alive(), "mark_published waited on a row the cancel holds"
        assert published == [len(ids) - 1]
        assert cancel_pending(cancelling, "t1", [trigger_id], now=now,
                              reason="trigger deleted") == len(ids)
    with db.begin() as session:
        rows = session.execute(select(Invocation.id, Invocation.status, Invocation.enqueued_at)
                               .where(Invocation.trigger_id == trigger_id)).all()
    assert {row.status for row in rows} == {InvocationStatus.CANCELLED}
    assert sorted(row.id for row in rows if row.enqueued_at is None) == [held]


def _mark(db: sessionmaker[Session], ids: list[uuid.UUID], now: dt.datetime) -> int:
    with db.begin() as session:
        return claims.mark_published(session, ids, now)


def test_concurrent_cancels_and_marking_published_of_many_runs_never_deadlock(
    db: sessionmaker[Session],
) -> None:
    rng = random.Random(11)
    errors: list[str] = []
    for _ in range(ROUNDS):
        trigger_id, ids = _pending_runs(db, INVOCATIONS)
        rng.shuffle(ids)
        now = _now(db)
        errors += _race(
            db,
            functools.partial(_mark_in, ids=ids, now=now),
            functools.partial(_cancel_in, trigger_id=trigger_id, now=now),
            functools.partial(_cancel_in, trigger_id=trigger_id, now=now),
            index_scans=True,
        )
        with db.begin() as session:
            statuses = set(session.execute(
                select(Invocation.status).where(Invocation.trigger_id == trigger_id)).scalars())
        assert statuses == {InvocationStatus.CANCELLED}
    assert errors == []


def _mark_in(session: Session, *, ids: list[uuid.UUID], now: dt.datetime) -> None:
    claims.mark_published(session, ids, now)


def _cancel_in(session: Session, *, trigger_id: uuid.UUID, now: dt.datetime) -> None:
    cancel_pending(session, "t1", [trigger_id], now=now, reason="trigger deleted")


def test_each_advisory_lock_purpose_has_its_own_namespace(db: sessionmaker[Session]) -> None:
    from app.queries import locks

    with db.begin() as session:
        locks.fence_shared(session)
        locks.lock_project(session, "t1", "p1")
        locks.lock_trigger_runs(session, uuid.uuid4())
        held = session.execute(text(
            "SELECT classid::bigint, objsubid FROM pg_locks WHERE locktype = 'advisory'"
            " AND pid = pg_backend_pid() ORDER BY objsubid, classid")).all()
    fence_high = locks.FENCE_LOCK_KEY >> 32
    # The fence: PostgreSQL's one-key form (objsubid 1); the others: the two-key form
    # (objsubid 2), each under its purpose's first key.
    assert [(row.classid, row.objsubid) for row in held] == [
        (fence_high, 1), (locks.PROJECT_NAMESPACE, 2), (locks.TRIGGER_RUNS_NAMESPACE, 2)]
