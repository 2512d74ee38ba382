"""Reading and cancelling invocations: a trigger's history, as the API shows it.

Every function takes the caller's ``Session`` and never commits, and every statement
filters by tenant and project.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

from sqlalchemy import select, tuple_, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from app.editing.triggers import get_trigger
from app.enums import InvocationStatus
from app.errors import Conflict, NotFound
from app.models import Invocation, InvocationAttempt
from app.queries.cancellation import CANCELLABLE, cancel_values

CANCELLED_REASON = "cancelled by user"


def last_invocations(
    session: Session, tenant_id: str, trigger_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Invocation]:
    """Return each trigger's latest invocation (by scheduled_for), for those that have one."""
    ids = list(trigger_ids)
    if not ids:
        return {}
    # DISTINCT ON walks the (trigger_id, scheduled_for) unique index backwards per trigger.
    rows = session.execute(
        select(Invocation)
        .where(Invocation.tenant_id == tenant_id, Invocation.trigger_id.in_(ids))
        .ext(distinct_on(Invocation.trigger_id))
        .order_by(Invocation.trigger_id, Invocation.scheduled_for.desc())
    ).scalars()
    return {row.trigger_id: row for row in rows if row.trigger_id is not None}


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
    statement = select(Invocation).where(
        Invocation.tenant_id == tenant_id,
        Invocation.project_id == project_id,
        Invocation.trigger_id == trigger_id,
    )
    if status is not None:
        statement = statement.where(Invocation.status == status)
    if before is not None:
        statement = statement.where(
            tuple_(Invocation.scheduled_for, Invocation.id) < tuple_(*before)
        )
    statement = statement.order_by(Invocation.scheduled_for.desc(), Invocation.id.desc())
    return list(session.execute(statement.limit(limit)).scalars())


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
