"""The run's concurrency-critical statements: one function per operation.

Each function takes the caller's ``Session`` and never commits. The clock is the
database's ``now()``, which PostgreSQL fixes at the start of the transaction: every
statement of one unit of work sees the same instant, and all workers share one clock.

Who else writes an invocation while a run holds it: duplicate ``run_trigger`` messages
(the broker redelivers, the sweep re-publishes), the dispatcher's sweep taking back an
expired lease (:func:`app.queries.sweep.take_expired_leases`), and the API requesting a cancel.
The comment beside each conditional write says why it is safe against them.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    ColumnElement,
    Interval,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from app.enums import InvocationStatus
from app.models import Invocation, InvocationAttempt

# The lease is the trigger's timeout_s plus this. A webhook's whole request (DNS,
# connect, response, excerpt) ends by timeout_s (libcurl's total timeout,
# app.delivery.webhook_transport); the grace covers the rest: rendering the template (a
# bounded number of steps), publishing a task message (about 20 s at most, tasks.run),
# and the finishing transaction, which is tried again until the lease ends
# (app.firing.outcome.finish_retrying): the grace is also how long a database outage may
# last before a delivered run is taken back. Too short and a slow but healthy attempt is
# taken back and run twice; too long and a run the sweep must take back (its worker
# hangs, or lost the database) waits longer. A dead worker's runs do not wait for it:
# they are taken back once its heartbeat stops (app.firing.reap).
LEASE_GRACE_S = 60

_RUNNING = InvocationStatus.RUNNING
_PENDING = InvocationStatus.PENDING


def _seconds(value: float) -> ColumnElement[dt.timedelta]:
    return literal(dt.timedelta(seconds=value), Interval())


def _due() -> ColumnElement[bool]:
    return or_(Invocation.run_after.is_(None), Invocation.run_after <= func.now())


def day_of(session: Session, invocation_id: uuid.UUID) -> dt.datetime | None:
    """The invocation's scheduled_for (its day: half its key), None if there is none."""
    # By id alone: an index probe in each day's partition.
    return session.execute(
        select(Invocation.scheduled_for).where(Invocation.id == invocation_id)
    ).scalar_one_or_none()


def other_run_in_progress(
    session: Session, trigger_id: uuid.UUID, invocation_id: uuid.UUID
) -> bool:
    """Return whether another invocation of the trigger, earlier or later, is running now."""
    # Any other, not only earlier ones: an occurrence waiting for its retry may come
    # back while a later occurrence runs, and under skip the two must not run at once.
    # Read after lock_trigger_runs: under READ COMMITTED this statement sees every run
    # whose claim committed before the lock was granted. A running row whose lease
    # expired still counts: until the sweep takes it back, it may still be delivering.
    statement = select(
        select(Invocation.id)
        .where(
            Invocation.trigger_id == trigger_id,
            Invocation.id != invocation_id,
            Invocation.status == _RUNNING,
        )
        .exists()
    )
    return bool(session.scalar(statement))


def other_run_waiting(
    session: Session, trigger_id: uuid.UUID, invocation_id: uuid.UUID,
    scheduled_for: dt.datetime,
) -> bool:
    """Return whether an earlier scheduled run of the trigger is pending: under overlap
    ``buffer_one`` it is the one waiting for the running one to end."""
    # Read under lock_trigger_runs, as other_run_in_progress.
    statement = select(
        select(Invocation.id)
        .where(
            Invocation.trigger_id == trigger_id,
            Invocation.id != invocation_id,
            Invocation.status == _PENDING,
            Invocation.manual.is_(False),
            Invocation.scheduled_for < scheduled_for,
        )
        .exists()
    )
    return bool(session.scalar(statement))


def close_without_running(
    session: Session, invocation_id: uuid.UUID, status: InvocationStatus, reason: str
) -> bool:
    """Finish a pending invocation as cancelled, skipped or missed (overlap
    ``buffer_one``); True if this call did it."""
    assert status in (InvocationStatus.CANCELLED, InvocationStatus.SKIPPED,
                      InvocationStatus.MISSED)
    # Conditional like the claim: of two messages deciding the same thing, one closes
    # it; if another message claimed it first, it runs and this one changes nothing. A
    # requested cancel closes it even before run_after.
    statement = (
        update(Invocation)
        .where(
            Invocation.id == invocation_id,
            Invocation.status == _PENDING,
            or_(_due(), Invocation.cancel_requested.is_(True)),
        )
        .values(status=status, finished_at=func.now(), lease_expires_at=None, last_error=reason)
        .execution_options(synchronize_session=False)
    )
    return session.execute(statement).rowcount == 1


def recorded_finish(
    session: Session, invocation_id: uuid.UUID, number: int
) -> tuple[InvocationStatus | None, float | None] | None:
    """Return what attempt ``number``'s own finish left, or None if it never committed.

    Returns:
        ``(status, run_after_in_s)``: the invocation's status and the seconds until its
        ``run_after``, both None if another attempt has claimed it since.
    """
    # For a finishing transaction tried again after a connection error: the first try
    # may have committed with only its acknowledgement lost. The attempt row tells: the
    # finish (attempts.finish_many) gave it an outcome, and the sweep's
    # "abandoned" is not one of ours. Trying the finish again would overwrite it as a lost lease.
    row = session.execute(
        select(
            Invocation.status,
            Invocation.attempt,
            func.extract("epoch", Invocation.run_after - func.now()),
        )
        .join(InvocationAttempt, InvocationAttempt.invocation_id == Invocation.id)
        .where(
            Invocation.id == invocation_id,
            InvocationAttempt.number == number,
            InvocationAttempt.outcome.is_not(None),
            InvocationAttempt.outcome != "abandoned",
        )
    ).first()
    if row is None:
        return None
    status, attempt, run_after_in_s = row
    if attempt != number:
        return None, None
    return status, None if run_after_in_s is None else max(0.0, float(run_after_in_s))
