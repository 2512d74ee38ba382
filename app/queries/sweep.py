"""The sweep's statements: what lost its message, what waits unsent, what outlived its lease.

Like :mod:`app.queries.claims`, every function takes the caller's ``Session``, never
commits, and is set-based and safe beside other dispatchers (``SKIP LOCKED``); the
comment beside each says why.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Interval,
    Select,
    and_,
    case,
    delete,
    func,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from app.enums import InvocationStatus
from app.models import (
    Invocation,
    InvocationAttempt,
    InvocationKey,
    ProcessHeartbeat,
    Trigger,
)

_TS = DateTime(timezone=True)
#: The last_error of a run whose worker was lost (its lease ran out).
LEASE_LOST_ERROR = "worker lost: the lease expired before the attempt finished"
#: The last_error of a run whose worker stopped heartbeating while it ran.
WORKER_LOST_ERROR = "worker lost: its process stopped while the attempt ran"


def stale_pending_query(
    stale_before: dt.datetime | ColumnElement[Any], limit: int
) -> Select[tuple[uuid.UUID]]:
    """Select (and lock, skipping locked) pending invocations last sent before a cutoff."""
    # The expression is ix_invocations_pending_last_sent's, so this is a range scan
    # over the stale rows only. A parked run has no message to lose: a worker takes it
    # from the database (app.firing.fairness).
    last_sent = func.greatest(
        func.coalesce(Invocation.enqueued_at, Invocation.created_at), Invocation.run_after
    )
    return (
        select(Invocation.id)
        .where(Invocation.status == InvocationStatus.PENDING, Invocation.parked_at.is_(None),
               last_sent < stale_before)
        .order_by(last_sent)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def _mark_sent(session: Session, picked: Any, now: dt.datetime) -> list[InvocationKey]:
    """Set enqueued_at = ``now`` on the rows ``picked`` selects (and locks); their keys."""
    statement = (
        update(Invocation)
        .where(Invocation.id.in_(picked))
        .values(enqueued_at=now, parked_at=None)
        .returning(Invocation.id, Invocation.scheduled_for)
        .execution_options(synchronize_session=False)
    )
    return [InvocationKey(*row) for row in session.connection().execute(statement)]


def lost_before(
    stale_before: dt.datetime, oldest_waiting: uuid.UUID | None, margin: dt.timedelta
) -> ColumnElement[dt.datetime]:
    """The instant before which a pending row's message is lost, not waiting.

    ``stale_before``, or, while a backlog waits in the queue, ``margin`` before the
    oldest waiting message was sent, whichever is earlier: the queue is FIFO, so what
    was sent before that message has left the queue (messaging.backlog). The margin
    covers publishers whose messages reach Redis a moment out of order.
    """
    cutoff: ColumnElement[dt.datetime] = literal(stale_before, _TS)
    if oldest_waiting is None:
        return cutoff
    waiting_sent = (
        select(func.coalesce(Invocation.enqueued_at, Invocation.created_at))
        .where(Invocation.id == oldest_waiting)
        .scalar_subquery()
    )
    # LEAST ignores a NULL: a waiting message whose invocation is gone changes nothing.
    return func.least(cutoff, waiting_sent - literal(margin, Interval()))


def take_stale_pending(
    session: Session, now: dt.datetime, stale_before: dt.datetime | ColumnElement[Any],
    limit: int,
) -> list[InvocationKey]:
    """Re-mark as published now, and return, pending invocations whose message is lost."""
    # A pending row whose message went out (or should have: committed but never
    # published) before ``stale_before`` (see lost_before) and never started has lost
    # its message: a dispatcher crashed between commit and publish, or Redis restarted
    # empty. Setting enqueued_at in the same statement that picks the rows is the claim: SKIP LOCKED
    # keeps two sweepers off the same rows, and once this commits the rows no longer
    # look stale, so each lost message is published again by one sweeper only.
    stale = stale_pending_query(stale_before, limit).scalar_subquery()
    return _mark_sent(session, stale, now)


def take_unpublished(
    session: Session, now: dt.datetime, limit: int, *, settle: dt.timedelta
) -> list[InvocationKey]:
    """Mark as published now, and return, pending invocations whose message is due, unsent.

    ``enqueued_at`` NULL means no message went out: a retry longer than a tick waits in
    the database, not as a countdown message held in a worker's memory (the runner
    leaves it pending with ``run_after``), and is published once due; a tick's or a
    request's publish that failed is published at the next tick, not after
    CRONBEAT_REPUBLISH_AFTER_S. A row younger than ``settle`` without run_after is left
    to the request that is publishing it. Setting enqueued_at in the statement that
    picks the rows is the claim (SKIP LOCKED, as the sweep).
    """
    # ix_invocations_retry_due holds exactly the rows this reads (parked runs are not
    # unsent: they wait for a worker to take them, app.firing.fairness).
    due = (
        select(Invocation.id)
        .where(
            Invocation.status == InvocationStatus.PENDING,
            Invocation.enqueued_at.is_(None),
            Invocation.parked_at.is_(None),
            func.coalesce(Invocation.run_after, Invocation.created_at + settle) <= now,
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return _mark_sent(session, due, now)


def take_expired_leases(
    session: Session, now: dt.datetime, limit: int, *, failed: list[Any] | None = None
) -> list[InvocationKey]:
    """Return running invocations whose lease ran out to pending; return their keys.

    Those out of attempts end failed instead; ``failed``, if given, collects their rows
    (id, trigger_id, tenant_id, project_id, scheduled_for, manual), for their alerts.
    """
    # The worker that held the lease died (or hangs past its timeout). The conditional
    # WHERE status = 'running' AND lease_expires_at < now makes the take-back happen
    # once; the late worker's own finish is conditional on (running, its attempt), so
    # it cannot overwrite what the next attempt does.
    expired = (
        select(Invocation.id)
        .where(Invocation.status == InvocationStatus.RUNNING, Invocation.lease_expires_at < now)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return _take_back(session, expired, literal(now, _TS), LEASE_LOST_ERROR, "lease expired",
                      failed)


def take_dead_workers_leases(
    session: Session, dead_after: dt.timedelta, limit: int, *,
    failed: list[Any] | None = None,
) -> list[InvocationKey]:
    """Take back the running invocations of workers not heartbeating for ``dead_after``.

    As :func:`take_expired_leases`, for the runs whose lease names a process
    (``leased_by``) with no registry row seen within ``dead_after`` (the registry's
    LIVE_TTL_S): the worker died (or lost the database for that long), so its runs need
    not wait for their leases. A run of a live worker is never taken back here.
    """
    # Read through ix_invocations_running (running rows only: at most the fleet's
    # delivery threads), one primary-key probe of the registry each. SKIP LOCKED and the
    # conditional status make the take-back happen once across every worker running
    # this, and a finish racing it is decided by the row lock: whichever commits first.
    live = (
        select(literal(1))
        .where(ProcessHeartbeat.id == Invocation.leased_by,
               ProcessHeartbeat.last_seen_at >= func.now() - literal(dead_after, Interval()))
        .exists()
    )
    # A PostgreSQL restarted this recently stopped every heartbeat: nobody is judged dead
    # until the live processes had the time to heartbeat again.
    settled = func.now() - func.pg_postmaster_start_time() > literal(dead_after, Interval())
    dead = (
        select(Invocation.id)
        .where(Invocation.status == InvocationStatus.RUNNING,
               Invocation.leased_by.is_not(None), ~live, settled)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return _take_back(session, dead, func.now(), WORKER_LOST_ERROR, "worker lost", failed)


def undo_orphaned_claims(
    session: Session, leased_by: uuid.UUID, keep: set[uuid.UUID], older_than: dt.timedelta,
    limit: int,
) -> list[InvocationKey]:
    """Return to pending, as if never claimed, the runs this worker's lease names and it
    does not hold (``keep``: those it delivers or could not record): claims whose commit
    it never saw, because the connection broke at the commit. None of them started, so
    their attempt is undone (its number and its row), not spent.

    Only claims older than ``older_than``: a claim that just committed is being handed
    to its thread.
    """
    # ix_invocations_running: running rows only, a fleet's delivery threads at most.
    picked = (
        select(Invocation.id)
        .where(Invocation.status == InvocationStatus.RUNNING,
               Invocation.leased_by == leased_by,
               Invocation.started_at < func.now() - literal(older_than, Interval()),
               Invocation.id.not_in(sorted(keep)))
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = session.connection().execute(
        update(Invocation)
        .where(Invocation.id.in_(picked), Invocation.status == InvocationStatus.RUNNING,
               Invocation.leased_by == leased_by)
        .values(status=InvocationStatus.PENDING.value, attempt=Invocation.attempt - 1,
                lease_expires_at=None, leased_by=None, parked_at=None,
                enqueued_at=func.now())
        .returning(Invocation.id, Invocation.scheduled_for, Invocation.attempt)
        .execution_options(synchronize_session=False)
    ).all()
    if rows:
        session.connection().execute(
            delete(InvocationAttempt)
            .where(InvocationAttempt.scheduled_for.in_({row.scheduled_for for row in rows}),
                   tuple_(InvocationAttempt.invocation_id, InvocationAttempt.number).in_(
                       [(row.id, row.attempt + 1) for row in rows]))
            .execution_options(synchronize_session=False)
        )
    return [InvocationKey(row.id, row.scheduled_for) for row in rows]


def _take_back(
    session: Session, picked: Any, now: Any, error: str, attempt_error: str,
    failed: list[Any] | None,
) -> list[InvocationKey]:
    """Return the running invocations ``picked`` selects (and locks) to pending, or to
    failed when they used their last attempt; mark their open attempts abandoned."""
    out_of_attempts = (
        select(literal(True))
        .where(
            and_(Trigger.id == Invocation.trigger_id, Invocation.attempt >= Trigger.max_attempts)
        )
        .exists()
    )
    statement = (
        update(Invocation)
        .where(Invocation.id.in_(picked), Invocation.status == InvocationStatus.RUNNING)
        .values(
            status=case(
                (out_of_attempts, InvocationStatus.FAILED.value),
                else_=InvocationStatus.PENDING.value,
            ),
            lease_expires_at=None,
            run_after=None,
            enqueued_at=now,
            finished_at=case((out_of_attempts, now), else_=None),
            last_error=error,
        )
        .returning(Invocation.id, Invocation.status, Invocation.scheduled_for,
                   Invocation.trigger_id, Invocation.tenant_id, Invocation.project_id,
                   Invocation.manual)
        .execution_options(synchronize_session=False)
    )
    rows = session.connection().execute(statement).all()
    if failed is not None:
        failed.extend(row for row in rows if row.status == InvocationStatus.FAILED)
    taken = [row.id for row in rows]
    if taken:
        session.connection().execute(
            update(InvocationAttempt)
            .where(
                InvocationAttempt.invocation_id.in_(taken),
                InvocationAttempt.outcome.is_(None),
            )
            .values(outcome="abandoned", finished_at=now, error=attempt_error)
            .execution_options(synchronize_session=False)
        )
    return [InvocationKey(row.id, row.scheduled_for) for row in rows
            if row.status == InvocationStatus.PENDING]
