"""Backfill: record the occurrences of a past time range that have no invocation yet.

The occurrences are the schedule's own (the pure core, with its DST rules), so a
backfill of a range that crossed a DST change has exactly the runs the dispatcher would
have recorded. The occurrence key stays ``(trigger_id, scheduled_for)``: an occurrence
that has an invocation already (it ran, was missed, or was backfilled before) is left
alone, and the insert is ``ON CONFLICT DO NOTHING`` so a racing dispatcher or second
backfill cannot record one twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from app.editing.triggers import get_trigger
from app.enums import InvocationStatus
from app.errors import InvalidTrigger
from app.models import Invocation, InvocationKey, Trigger
from app.schedule.kinds import schedule_of

#: Occurrences one call may record (a dry run lists as many); a longer range is done in
#: several calls, each starting where the last one's ``capped_at`` says.
MAX_OCCURRENCES = 1000


@dataclasses.dataclass(frozen=True)
class Backfill:
    """What a backfill found in ``[start, end)`` (at most MAX_OCCURRENCES of it)."""

    #: Occurrences without an invocation: recorded now, or (dry run) that would be.
    missing: list[dt.datetime]
    #: Occurrences in the range that have an invocation already.
    recorded: int
    #: The first occurrence not looked at because of the cap; None if the range is done.
    capped_at: dt.datetime | None
    #: The keys of the invocations created (empty for a dry run).
    created: list[InvocationKey]


def occurrences(trigger: Trigger, start: dt.datetime, end: dt.datetime,
                limit: int) -> tuple[list[dt.datetime], dt.datetime | None]:
    """The trigger's occurrences in ``[start, end)``, at most ``limit``; and the next one."""
    return schedule_of(trigger).between(start, end, limit)


def backfill(
    session: Session, tenant_id: str, project_id: str, trigger_id: uuid.UUID, *,
    start: dt.datetime, end: dt.datetime, now: dt.datetime, retention_days: int,
    dry_run: bool,
) -> Backfill:
    """Record (or, ``dry_run``, list) the range's occurrences that have no invocation.

    The new invocations are pending with no message sent: the caller publishes them
    after the commit (else the dispatcher's next tick does).

    Raises:
        NotFound: no such trigger in this tenant's project.
        InvalidTrigger: the range is empty, reaches past ``now``, or starts before the
            history's retention (its rows would be dropped at once); names ``from``/``to``.
    """
    trigger = get_trigger(session, tenant_id, project_id, trigger_id)
    if not start < end:
        raise InvalidTrigger("to", "must be after from")
    if end > now:
        raise InvalidTrigger("to", "must not be in the future: the dispatcher runs those")
    oldest = now - dt.timedelta(days=retention_days)
    if start < oldest:
        raise InvalidTrigger(
            "from", f"must be within the history's retention ({retention_days} days)")
    found, capped_at = occurrences(trigger, start, end, MAX_OCCURRENCES)
    recorded = set(session.execute(
        select(Invocation.scheduled_for).where(
            Invocation.trigger_id == trigger.id,
            Invocation.scheduled_for >= start, Invocation.scheduled_for < end)
    ).scalars()) if found else set()
    missing = [moment for moment in found if moment not in recorded]
    created: list[InvocationKey] = []
    if missing and not dry_run:
        rows = session.execute(
            pg_insert(Invocation)
            .values([{"trigger_id": trigger.id, "tenant_id": tenant_id,
                      "project_id": project_id, "scheduled_for": moment,
                      "status": InvocationStatus.PENDING, "manual": True, "backfill": True}
                     for moment in missing])
            .on_conflict_do_nothing(constraint="uq_invocations_trigger_id_scheduled_for")
            .returning(Invocation.id, Invocation.scheduled_for)
        ).all()
        created = sorted((InvocationKey(*row) for row in rows), key=lambda k: k.scheduled_for)
        missing = [key.scheduled_for for key in created]
    return Backfill(missing=missing, recorded=len(found) - len(missing), capped_at=capped_at,
                    created=created)
