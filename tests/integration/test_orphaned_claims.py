"""A claim whose commit its worker never saw (the connection broke at the commit) is an
orphan: running, leased by that worker, held by none of its threads. The worker's
reaper undoes it (app.queries.sweep.undo_orphaned_claims): pending again, its attempt
undone, published; so it runs, and is not failed at its lease as a lost worker's run."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.enums import InvocationStatus
from app.models import Invocation, InvocationAttempt, ProcessHeartbeat
from app.queries import attempts, sweep
from tests.support.receiver import Receiver
from tests.support.runs import DEADLINE_S, T0, add_invocation, add_trigger

WORKER = uuid.UUID("00000000-0000-0000-0000-0000000000aa")


def _claim(db: sessionmaker[Session], invocation_id: uuid.UUID, leased_by: uuid.UUID,
           age_s: float) -> None:
    """Claim the run for ``leased_by``, as an attempt started ``age_s`` ago."""
    with db.begin() as session:
        assert attempts.claim_many(session, [(invocation_id, T0)], None, 0, leased_by)
        session.execute(update(Invocation).where(Invocation.id == invocation_id).values(
            started_at=func.now() - dt.timedelta(seconds=age_s)))


def _row(db: sessionmaker[Session], invocation_id: uuid.UUID) -> Any:
    with db.begin() as session:
        invocation = session.execute(select(
            Invocation.status, Invocation.attempt, Invocation.leased_by,
            Invocation.lease_expires_at).where(Invocation.id == invocation_id)).one()
        numbers = list(session.execute(select(InvocationAttempt.number).where(
            InvocationAttempt.invocation_id == invocation_id)).scalars())
    return invocation, numbers


def test_only_old_claims_the_worker_does_not_hold_are_undone(
    db: sessionmaker[Session],
) -> None:
    orphan, held, fresh, other = (add_invocation(db, add_trigger(db)) for _ in range(4))
    _claim(db, orphan, WORKER, 60)
    _claim(db, held, WORKER, 60)
    _claim(db, fresh, WORKER, 5)
    _claim(db, other, uuid.uuid4(), 60)  # another worker's
    with db.begin() as session:
        undone = sweep.undo_orphaned_claims(session, WORKER, {held},
                                            dt.timedelta(seconds=30), 100)
    assert [key.id for key in undone] == [orphan]
    assert _row(db, orphan) == ((InvocationStatus.PENDING, 0, None, None), [])
    for kept in (held, fresh, other):
        (status, attempt, _, _), numbers = _row(db, kept)
        assert (status, attempt, numbers) == (InvocationStatus.RUNNING, 1, [1])


@pytest.mark.slow
def test_a_worker_runs_its_orphaned_claim_instead_of_leaving_it_to_fail(
    db: sessionmaker[Session], start_worker: Any, receiver: Receiver,
) -> None:
    start_worker()
    deadline = time.monotonic() + DEADLINE_S
    while True:
        with db.begin() as session:
            worker_id = session.execute(select(ProcessHeartbeat.id).where(
                ProcessHeartbeat.kind == "worker")).scalar()
        if worker_id is not None:
            break
        assert time.monotonic() < deadline, "the worker never registered"
        time.sleep(0.1)
    # One attempt only: were it left to its lease, it would end failed, undelivered.
    invocation_id = add_invocation(db, add_trigger(db, receiver, max_attempts=1))
    _claim(db, invocation_id, worker_id, 60)
    receiver.wait_for(1, timeout_s=30)
    deadline = time.monotonic() + DEADLINE_S
    while _row(db, invocation_id)[0].status is not InvocationStatus.SUCCEEDED:
        assert time.monotonic() < deadline, _row(db, invocation_id)
        time.sleep(0.1)
    (status, attempt, _, _), numbers = _row(db, invocation_id)
    assert (status, attempt, numbers) == (InvocationStatus.SUCCEEDED, 1, [1])
    assert receiver.count == 1
