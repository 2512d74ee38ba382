"""The occurrences an edit takes away from a trigger that was already due.

A trigger whose ``next_run_at`` is at or before ``now`` has occurrences the dispatcher
has not recorded yet: it is lagging, was down, or skipped the row because the editing
request held its lock. An edit that moves ``next_run_at`` (a new schedule, a pause, a
delete) takes those occurrences away from the dispatcher, so the edit records them
itself, as ``missed`` invocations: no occurrence vanishes without a history row.

The keys are the dispatcher's (the trigger and the occurrence's instant, enumerated from
``next_run_at`` as :func:`app.occurrences.plan_trigger` does), and the insert is ON
CONFLICT DO NOTHING on that unique key, so a row a dispatcher recorded first wins.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from app import scheduling
from app.enums import InvocationStatus
from app.errors import InvalidSchedule
from app.models import Invocation, Trigger

RESCHEDULED_REASON = "missed: the schedule was changed before it ran"
DISABLED_REASON = "missed: the trigger was disabled before it ran"
DELETED_REASON = "missed: the trigger was deleted before it ran"

#: One edit records at most this many of a trigger's due occurrences, oldest first, one
#: row each; the last row's message then names the end of the rest of the backlog. A
#: minutely trigger behind by a day would otherwise write 1,440 rows per trigger, and a
#: sync of a thousand such triggers a million.
MAX_MISSED_PER_EDIT = 100

_ONE_SECOND = dt.timedelta(seconds=1)


def missed_rows(
    old: Trigger, next_run_at: dt.datetime | None, *, now: dt.datetime, reason: str
) -> list[dict[str, Any]]:
    """Return the ``missed`` invocation rows an edit of ``old`` must record.

    ``old`` is the trigger as stored before the edit and ``next_run_at`` what the edit
    sets (None: disabled or deleted). Nothing is due, or nothing is taken away, unless
    ``old`` is enabled, its ``next_run_at`` is at or before ``now`` and the edit changes it.
    """
    if (
        not old.enabled
        or old.next_run_at is None
        or old.next_run_at > now
        or next_run_at == old.next_run_at
    ):
        return []
    due, more = _due_occurrences(old, now)
    rows = [
        {
            "trigger_id": old.id, "tenant_id": old.tenant_id, "project_id": old.project_id,
            "scheduled_for": scheduled_for, "status": InvocationStatus.MISSED.value,
            "manual": False, "attempt": 0, "created_at": now, "finished_at": now,
            "last_error": reason,
        }
        for scheduled_for in due
    ]
    if more:
        rows[-1]["last_error"] = (
            f"{reason} (so were the later occurrences up to {now.isoformat()})"
        )
    return rows


def _due_occurrences(old: Trigger, now: dt.datetime) -> tuple[list[dt.datetime], bool]:
    # Returns the due instants (at most MAX_MISSED_PER_EDIT) and whether more are due.
    assert old.next_run_at is not None
    if old.cron_expression is None:
        return [old.next_run_at], False
    try:
        # The first real occurrence at or after next_run_at, as the dispatcher counts.
        occurrence = scheduling.next_run_at(old.cron_expression, old.timezone,
                                            old.next_run_at - _ONE_SECOND)
        due: list[dt.datetime] = []
        while occurrence <= now and len(due) < MAX_MISSED_PER_EDIT:
            due.append(occurrence)
            occurrence = scheduling.next_run_at(old.cron_expression, old.timezone, occurrence)
    except InvalidSchedule:
        # A stored expression that no longer computes (the dispatcher records it
        # failed): the one instant known to be due is recorded.
        return [old.next_run_at], False
    return due, occurrence <= now


def record_missed(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (from :func:`missed_rows`), batched; a key already taken is kept."""
    if not rows:
        return
    # ON CONFLICT DO NOTHING on UNIQUE (trigger_id, scheduled_for), as the dispatcher's
    # own insert. The editor holds the trigger's row lock, and a dispatcher records
    # occurrences and advances next_run_at in one transaction under that same lock, so
    # normally no row exists yet; should one exist all the same (a replayed or
    # hand-repaired occurrence), the row already there, perhaps running, wins.
    statement = pg_insert(Invocation.__table__).on_conflict_do_nothing(
        constraint="uq_invocations_trigger_id_scheduled_for"
    )
    session.execute(statement, list(rows))
