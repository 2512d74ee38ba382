"""Reading and cancelling invocations: a trigger's history, as the API shows it.

Every function takes the caller's ``Session`` and never commits, and every statement
filters by tenant and project.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

from sqlalchemy import select, true, tuple_, update
from sqlalchemy.orm import Session, aliased

from app.editing.triggers import get_trigger
from app.enums import InvocationStatus
from app.errors import Conflict, NotFound
from app.history import stats
from app.models import Invocation, InvocationAttempt, Trigger
from app.queries.cancellation import CANCELLABLE, cancel_values

CANCELLED_REASON = "cancelled by user"


def last_invocations(
    session: Session, tenant_id: str, trigger_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Invocation]:
    """Return each trigger's latest invocation (by scheduled_for), for those that have one.

    A cost per trigger that does not grow with its history: a LATERAL subquery
    ``ORDER BY scheduled_for DESC LIMIT 1`` per trigger walks the (trigger_id,
    scheduled_for) index backwards and stops at its first row. It looks first at or after
    the trigger's ``last_scheduled_for`` (the dispatcher sets it in the transaction that
    records that occurrence), which PostgreSQL prunes at run time to the last few day
    partitions; a later manual run is found there too. Only a trigger with nothing
    there (never dispatched, or its last occurrence past retention) is looked up in
    every partition.
    """
    ids = list(dict.fromkeys(trigger_ids))
    found = _latest(session, tenant_id, ids, since_last_scheduled=True) if ids else {}
    rest = [trigger_id for trigger_id in ids if trigger_id not in found]
    if rest:
        found.update(_latest(session, tenant_id, rest, since_last_scheduled=False))
    return found


def _latest(
    session: Session, tenant_id: str, ids: list[uuid.UUID], *, since_last_scheduled: bool,
) -> dict[uuid.UUID, Invocation]:
    wanted = (
        select(Trigger.id, Trigger.last_scheduled_for)
        .where(Trigger.tenant_id == tenant_id, Trigger.id.in_(ids))
        .subquery("wanted")
    )
    conditions = [Invocation.tenant_id == tenant_id, Invocation.trigger_id == wanted.c.id]
    if since_last_scheduled:
        conditions.append(Invocation.scheduled_for >= wanted.c.last_scheduled_for)
    latest = (
        select(Invocation)
        .where(*conditions)
        .order_by(Invocation.scheduled_for.desc())
        .limit(1)
        .lateral("latest")
    )
    row = aliased(Invocation, latest)
    rows = session.execute(select(row).select_from(wanted).join(latest, true())).scalars()
    return {found.trigger_id: found for found in rows if found.trigger_id is not None}


def list_invocations(
    session: Session, tenant_id: str, project_id: str, trigger_id: uuid.UUID, *, limit: int,
    status: InvocationStatus | None = None,
    before: tuple[dt.datetime, uuid.UUID] | None = None,
) -> list[Invocation]:
    """Return a trigger's invocations, newest first, older than the ``before`` cursor.

    Raises:
        NotFound: no such trigger in this tenant's project.
    """
    get_trigger(session, tenant_id, project_id, trigger_id)
    return list_project_invocations(session, tenant_id, project_id, limit=limit, status=status,
                                    trigger_id=trigger_id, before=before)


def list_project_invocations(
    session: Session, tenant_id: str, project_id: str, *, limit: int,
    status: InvocationStatus | None = None, trigger_id: uuid.UUID | None = None,
    since: dt.datetime | None = None, until: dt.datetime | None = None,
    before: tuple[dt.datetime, uuid.UUID] | None = None,
) -> list[Invocation]:
    """Return a project's invocations, newest first: deleted triggers' too.

    ``since`` (inclusive) and ``until`` (exclusive) bound ``scheduled_for``, so only
    the partitions of those days are read; ``before`` is the page cursor.
    """
    statement = select(Invocation).where(
        Invocation.tenant_id == tenant_id, Invocation.project_id == project_id)
    if status is not None:
        statement = statement.where(Invocation.status == status)
    if trigger_id is not None:
        statement = statement.where(Invocation.trigger_id == trigger_id)
    if since is not None:
        statement = statement.where(Invocation.scheduled_for >= since)
    if until is not None:
        statement = statement.where(Invocation.scheduled_for < until)
    if before is not None:
        statement = statement.where(
            tuple_(Invocation.scheduled_for, Invocation.id) < tuple_(*before))
    statement = statement.order_by(Invocation.scheduled_for.desc(), Invocation.id.desc())
    return list(session.execute(statement.limit(limit)).scalars())


def trigger_stats(
    session: Session, tenant_id: str, project_id: str, trigger_id: uuid.UUID, *,
    days: int, today: dt.date,
) -> list[stats.DayStats]:
    """A trigger's runs per UTC day over the ``days`` days ending ``today`` (rollups + live).

    A deleted trigger's statistics stay readable while it has any.

    Raises:
        NotFound: no such trigger in this tenant's project, and no history of one.
    """
    try:
        get_trigger(session, tenant_id, project_id, trigger_id)
    except NotFound:
        if not stats.has_history(session.connection(), tenant_id, project_id, trigger_id):
            raise
    return stats.trigger_stats(
        session.connection(), tenant_id, project_id, trigger_id,
        first_day=today - dt.timedelta(days=days - 1), last_day=today)


def get_invocation(
    session: Session, tenant_id: str, project_id: str, invocation_id: uuid.UUID
) -> tuple[Invocation, list[InvocationAttempt]]:
    """Return an invocation of the project and its attempts, in order.

    Raises:
        NotFound: no such invocation in this tenant's project.
    """
    invocation = session.execute(
        select(Invocation).where(
            Invocation.id == invocation_id,
            Invocation.tenant_id == tenant_id,
            Invocation.project_id == project_id,
        )
    ).scalar_one_or_none()
    if invocation is None:
        raise NotFound("invocation not found")
    attempts = session.execute(
        select(InvocationAttempt)
        .where(InvocationAttempt.invocation_id == invocation.id)
        .order_by(InvocationAttempt.number)
    ).scalars()
    return invocation, list(attempts)


def cancel_invocation(
    session: Session, tenant_id: str, project_id: str, invocation_id: uuid.UUID, *,
    now: dt.datetime,
) -> Invocation:
    """Cancel an invocation: pending -> cancelled; running -> ``cancel_requested``.

    Returns:
        The invocation as it now stands.

    Raises:
        NotFound: no such invocation in this tenant's project.
        Conflict: the invocation already finished.
    """
    scope = (
        Invocation.id == invocation_id,
        Invocation.tenant_id == tenant_id,
        Invocation.project_id == project_id,
    )
    # One conditional write, not read-then-write nor a statement per status: a worker
    # moves the row between pending and running at any moment (a claim; a failed attempt
    # released for a retry; the sweep taking back an expired lease). With two statements
    # (pending first, then running) the row could turn from running to pending between
    # them and both would miss, answering 409 while it kept retrying. Here the row is
    # locked and its status read by the same statement (re-read if a worker changed it
    # meanwhile, under READ COMMITTED), so any pending or running row is cancelled.
    changed = session.execute(
        update(Invocation)
        .where(*scope, Invocation.status.in_(CANCELLABLE))
        .values(cancel_values(now, CANCELLED_REASON))
        .returning(Invocation.id)
        .execution_options(synchronize_session=False)
    ).first()
    invocation = session.execute(
        select(Invocation).where(*scope).execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if invocation is None:
        raise NotFound("invocation not found")
    if changed is None:
        # Statuses never leave the final ones, so the row was final already.
        raise Conflict(f"the invocation already finished: {invocation.status.value}")
    return invocation
