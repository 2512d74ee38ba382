"""Cancelling invocations: the conditional writes behind delete, disable and cancel.

Every function takes the caller's ``Session`` and never commits, and filters by tenant.
Workers move invocations between pending and running at any moment (a claim, a retry
released, a lease taken back by the sweep), so nothing here reads a status and then
writes: each operation is one UPDATE whose WHERE and CASE decide on the row as it is
when the statement locks it (under READ COMMITTED a row changed meanwhile is re-checked
against the WHERE and the CASE sees its new status).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import DateTime, case, literal, update
from sqlalchemy.orm import Session

from app.enums import InvocationStatus
from app.models import Invocation
from app.queries.locks import by_id

DISABLED_REASON = "trigger disabled"
DELETED_REASON = "trigger deleted"
RESCHEDULED_REASON = "the schedule was changed before its instant"

_PENDING = InvocationStatus.PENDING
_RUNNING = InvocationStatus.RUNNING
#: The statuses a cancel can still change; every other status is final.
CANCELLABLE = (_PENDING, _RUNNING)


def cancel_values(now: dt.datetime, reason: str) -> dict[str, Any]:
    """The SET of a cancel: pending -> cancelled (finished now, ``reason``); running ->
    ``cancel_requested``, honoured by the worker before it starts another attempt.

    For an UPDATE whose WHERE limits the rows to :data:`CANCELLABLE`.
    """
    pending = Invocation.status == _PENDING
    return {
        "status": case((pending, InvocationStatus.CANCELLED.value), else_=Invocation.status),
        "finished_at": case((pending, literal(now, DateTime(timezone=True))),
                            else_=Invocation.finished_at),
        "last_error": case((pending, literal(reason)), else_=Invocation.last_error),
        "cancel_requested": case((Invocation.status == _RUNNING, True),
                                 else_=Invocation.cancel_requested),
    }


def cancel_pending(
    session: Session, tenant_id: str, trigger_ids: Iterable[uuid.UUID], *,
    now: dt.datetime, reason: str,
) -> int:
    """Cancel every pending invocation of these triggers, manual ones too; returns how many.

    For a deleted trigger. Conditional on ``status = 'pending'``: a worker that claimed
    one first (pending -> running) wins and that run goes on (it then finds its trigger
    gone); one this statement cancelled is never started, because the worker's claim is
    conditional on pending as well.
    """
    ids = list(trigger_ids)
    if not ids:
        return 0
    # Locked in id order (app.queries.locks): two cancels, or a cancel beside another multi-row
    # writer, cannot deadlock.
    locked = by_id(Invocation.tenant_id == tenant_id, Invocation.trigger_id.in_(ids),
                   Invocation.status == _PENDING)
    return session.execute(
        update(Invocation)
        .where(Invocation.id.in_(locked.scalar_subquery()), Invocation.status == _PENDING)
        .values(status=InvocationStatus.CANCELLED, finished_at=now, last_error=reason)
        .execution_options(synchronize_session=False)
    ).rowcount


def stop_scheduled_runs(
    session: Session, tenant_id: str, trigger_ids: Iterable[uuid.UUID], *, now: dt.datetime,
) -> int:
    """Stop the scheduled (not manual) invocations of triggers being disabled; returns how
    many it changed.

    Pending ones are cancelled; running ones get ``cancel_requested``, so the attempt in
    progress ends but no retry follows. That matters for a one-time trigger that already
    fired: it is disabled by the firing itself, and a worker cannot tell that from a
    pause, so without this its retries would go on after the pause.

    Manual runs are left alone: each is an explicit request of its own, which the worker
    runs whether the trigger is enabled or not, and which the user stops by cancelling it.
    """
    ids = list(trigger_ids)
    if not ids:
        return 0
    locked = by_id(Invocation.tenant_id == tenant_id, Invocation.trigger_id.in_(ids),
                   Invocation.manual.is_(False), Invocation.status.in_(CANCELLABLE))
    return session.execute(
        update(Invocation)
        .where(Invocation.id.in_(locked.scalar_subquery()),
               Invocation.status.in_(CANCELLABLE))
        .values(cancel_values(now, DISABLED_REASON))
        .execution_options(synchronize_session=False)
    ).rowcount


def cancel_held(
    session: Session, tenant_id: str, trigger_ids: Iterable[uuid.UUID], *, now: dt.datetime,
) -> int:
    """Cancel the pending scheduled runs of these triggers whose instant is still ahead
    (taken ahead and held: app.firing.dispatch), for a schedule that changed; returns how
    many. Runs of instants already past (a retry waiting) and manual runs are left alone.
    """
    ids = list(trigger_ids)
    if not ids:
        return 0
    ahead = (Invocation.tenant_id == tenant_id, Invocation.trigger_id.in_(ids),
             Invocation.manual.is_(False), Invocation.status == _PENDING,
             Invocation.scheduled_for > now)
    return session.execute(
        update(Invocation)
        .where(Invocation.id.in_(by_id(*ahead).scalar_subquery()), *ahead)
        .values(status=InvocationStatus.CANCELLED, finished_at=now,
                last_error=RESCHEDULED_REASON)
        .execution_options(synchronize_session=False)
    ).rowcount
