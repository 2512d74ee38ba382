"""Keeping alerts bounded: old alerts, and the rules and states of deleted triggers.

Run by the history's maintenance (app.history.retention), in one of its steps: alerts
are kept as long as the run history they are about.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, delete, exists, select

from app.history import counters
from app.models import Alert, AlertRule, Trigger, TriggerAlertState

#: Alerts deleted per maintenance run, at most (the next run goes on).
MAX_ALERTS_PER_RUN = 50_000


def prune(conn: Connection, *, before: dt.datetime) -> int:
    """Delete finished alerts created before ``before``, and what deleted triggers left.

    Returns:
        How many alerts were deleted.
    """
    old = (
        select(Alert.id)
        .where(Alert.created_at < before, Alert.status != "pending")
        .limit(MAX_ALERTS_PER_RUN)
        .scalar_subquery()
    )
    # Their counts move to /metrics' counter_totals in this transaction.
    deleted = conn.execute(delete(Alert).where(Alert.id.in_(old))
                           .returning(Alert.created_at, Alert.status)).all()
    counters.retire_alerts(conn, deleted)
    gone = ~exists().where(Trigger.id == TriggerAlertState.trigger_id)
    conn.execute(delete(TriggerAlertState).where(gone))
    conn.execute(delete(AlertRule).where(
        AlertRule.trigger_id.is_not(None),
        ~exists().where(Trigger.id == AlertRule.trigger_id)))
    return len(deleted)
