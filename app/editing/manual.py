"""Manual runs: an invocation a user asks for now, beside the trigger's schedule.

A manual run shares the invocations' idempotency key, UNIQUE (trigger_id,
scheduled_for), with the scheduled occurrences, so it must never take an instant the
schedule may use: the dispatcher's insert of that occurrence would then be folded into
the manual row by its ON CONFLICT DO NOTHING (the occurrence lost silently), and in the
other order the manual insert would fail. The rule (:func:`manual_instant`):

* Scheduled occurrences of a cron trigger are whole minutes, and a one-time trigger's
  only occurrence is its ``run_at``. A manual run is keyed at ``now`` with a non-zero
  microsecond (a whole-second ``now`` moves 1 µs later) and never at ``run_at``.
* Two manual runs at one instant (two requests in transactions that started in the same
  microsecond) take the next free microsecond: the insert is ON CONFLICT DO NOTHING and
  tries at most :data:`MAX_KEY_TRIES` instants.

A ``run_at`` edited later cannot land on a manual row's instant: ``run_at`` must lie
after the ``now`` of its save, and manual rows are keyed at or just after theirs.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from app.editing.triggers import get_trigger
from app.enums import InvocationStatus
from app.errors import Conflict
from app.models import Invocation, InvocationKey, Trigger

#: Instants one manual run tries before giving up; a collision needs another manual run
#: of the same trigger in the same microsecond, so a handful is plenty.
MAX_KEY_TRIES = 16

_ONE_MICROSECOND = dt.timedelta(microseconds=1)


class ManualRunCollision(Conflict):
    """Too many manual runs of the trigger at this instant; try again."""


def manual_instant(trigger: Trigger, at: dt.datetime) -> dt.datetime:
    """Return the first instant at or after ``at`` that no scheduled occurrence may use."""
    while at.microsecond == 0 or at == trigger.run_at:
        at += _ONE_MICROSECOND
    return at


def run_now(
    session: Session, tenant_id: str, project_id: str, trigger_id: uuid.UUID, *,
    now: dt.datetime,
) -> Invocation:
    """Record a manual run of the trigger, keyed at about ``now``; the schedule is untouched.

    The caller publishes its message after the commit; until then (or if publishing
    fails) the row has ``enqueued_at`` NULL and the dispatcher's sweep publishes it.

    Returns:
        The new pending invocation; its ``scheduled_for`` is :func:`manual_instant`'s.

    Raises:
        NotFound: no such trigger in this tenant's project.
        ManualRunCollision: :data:`MAX_KEY_TRIES` instants were all taken.
    """
    trigger = get_trigger(session, tenant_id, project_id, trigger_id)
    inserted = insert_manual(session, trigger, now=now)
    return session.execute(select(Invocation).where(Invocation.id == inserted.id)).scalar_one()


def insert_manual(
    session: Session, trigger: Trigger, *, now: dt.datetime, at: dt.datetime | None = None,
    **values: Any,
) -> InvocationKey:
    """Insert a pending manual invocation of ``trigger`` keyed at about ``now``; its key.

    ``at`` (default ``now``) is the first instant tried: a caller inserting many runs of
    one trigger in one transaction (a replay) starts each after the previous one's key.
    ``values`` sets more columns (a replay's id, ``replay_of``, ``occurrence_at``).

    Raises:
        ManualRunCollision: :data:`MAX_KEY_TRIES` instants were all taken.
    """
    candidate = at or now
    for _ in range(MAX_KEY_TRIES):
        candidate = manual_instant(trigger, candidate)
        inserted = session.execute(
            pg_insert(Invocation)
            .values(
                trigger_id=trigger.id, tenant_id=trigger.tenant_id,
                project_id=trigger.project_id, scheduled_for=candidate,
                status=InvocationStatus.PENDING, manual=True, attempt=0, created_at=now,
                **values,
            )
            .on_conflict_do_nothing(constraint="uq_invocations_trigger_id_scheduled_for")
            .returning(Invocation.id, Invocation.scheduled_for)
        ).first()
        if inserted is not None:
            return InvocationKey(*inserted)
        candidate += _ONE_MICROSECOND
    raise ManualRunCollision(f"{MAX_KEY_TRIES} manual runs of the trigger at {now.isoformat()}")
