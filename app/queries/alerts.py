"""The alert tables' locking statements: trigger alert states, the watchdog's lock, due
alerts, and a channel being edited.

Each takes the caller's ``Session`` and never commits. In the lock order
(:mod:`app.queries`), alert states come after every run-path lock (they are locked in
the transaction that records what they are about), and alerts last.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from app.models import Alert, AlertChannel, TriggerAlertState
from app.queries.locks import ALERTS_NAMESPACE

#: (trigger_id, tenant_id, project_id) of a trigger whose alert state is wanted.
StateKey = tuple[uuid.UUID, str, str]


def lock_alert_states(session: Session, keys: Sequence[StateKey]) -> list[TriggerAlertState]:
    """Each trigger's alert state row, created if missing, locked until commit, in trigger
    id order (so concurrent observers of overlapping triggers cannot deadlock)."""
    session.execute(
        pg_insert(TriggerAlertState)
        .values([{"trigger_id": trigger_id, "tenant_id": tenant_id, "project_id": project_id}
                 for trigger_id, tenant_id, project_id in keys])
        .on_conflict_do_nothing(index_elements=["trigger_id"])
    )
    return list(session.execute(
        select(TriggerAlertState)
        .where(TriggerAlertState.trigger_id.in_([key[0] for key in keys]))
        .order_by(TriggerAlertState.trigger_id)
        .with_for_update()
    ).scalars())


def try_watchdog_lock(session: Session) -> bool:
    """Take the alert watchdog's lock until commit; False if another watchdog holds it."""
    return bool(session.execute(
        select(func.pg_try_advisory_xact_lock(ALERTS_NAMESPACE, 0))).scalar())


def take_due_alerts(
    session: Session, now: dt.datetime, settle: dt.timedelta, limit: int
) -> list[uuid.UUID]:
    """Mark as published now, and return, pending alerts due whose message may be lost.

    Due: ``next_attempt_at`` has passed (a new alert, a retry whose wait is over, or an
    attempt whose lease ran out). A message published less than ``settle`` ago (or a
    countdown that went live that recently) is left to arrive. Setting ``published_at``
    in the statement that picks the rows (SKIP LOCKED) is the claim.
    """
    due = (
        select(Alert.id)
        .where(Alert.status == "pending", Alert.next_attempt_at <= now,
               or_(Alert.published_at.is_(None), Alert.published_at < now - settle))
        .order_by(Alert.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = session.execute(
        update(Alert).where(Alert.id.in_(due)).values(published_at=now)
        .returning(Alert.id).execution_options(synchronize_session=False)
    )
    return [row.id for row in rows]


def channel(session: Session, tenant_id: str, project_id: str, channel_id: uuid.UUID,
            *, for_update: bool = False) -> AlertChannel | None:
    """The tenant's project's channel ``channel_id`` (locked until commit when
    ``for_update``: an edit), None if there is none."""
    statement = select(AlertChannel).where(
        AlertChannel.id == channel_id, AlertChannel.tenant_id == tenant_id,
        AlertChannel.project_id == project_id)
    if for_update:
        statement = statement.with_for_update()
    return session.execute(statement).scalar_one_or_none()
