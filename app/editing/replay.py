"""Replay: run failed invocations again, each as one new manual invocation, once.

A replay is a new invocation of the same trigger (a new id, so a new ``webhook-id``),
keyed like a manual run, linked to its original (``replay_of``), whose delivery carries
the original occurrence's time (``occurrence_at``) and the trigger's payload. Each
original is replayed at most once: ``invocation_replays`` has it as primary key, and
the link and the new invocation are written in one transaction, so replaying the same
selection twice, or two callers at once, delivers each one once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from sqlalchemy import exists, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from app.editing.manual import insert_manual
from app.enums import InvocationStatus
from app.models import Invocation, InvocationKey, InvocationReplay, Trigger

#: The most one call replays; a larger selection is done in several calls.
MAX_PER_CALL = 500


@dataclasses.dataclass(frozen=True)
class Replayed:
    #: Failed invocations matching the selection that were not replayed before this call.
    matched: int
    #: (original id, new invocation's key), oldest original first.
    created: list[tuple[uuid.UUID, InvocationKey]]
    #: Originals left alone because their trigger was deleted.
    trigger_gone: int


def replay_failed(
    session: Session, tenant_id: str, project_id: str, *, now: dt.datetime, limit: int,
    dry_run: bool, trigger_ids: list[uuid.UUID] | None = None,
    since: dt.datetime | None = None, until: dt.datetime | None = None,
) -> Replayed:
    """Replay (or, ``dry_run``, count) the project's failed invocations in the selection.

    ``since``/``until`` bound the originals' ``scheduled_for``; at most ``limit`` (capped
    at MAX_PER_CALL) are replayed, oldest first. The caller publishes the new ones after
    the commit (else the dispatcher's next tick does).
    """
    conditions = [
        Invocation.tenant_id == tenant_id, Invocation.project_id == project_id,
        Invocation.status == InvocationStatus.FAILED,
        ~exists().where(InvocationReplay.original_id == Invocation.id),
    ]
    if trigger_ids:
        conditions.append(Invocation.trigger_id.in_(trigger_ids))
    if since is not None:
        conditions.append(Invocation.scheduled_for >= since)
    if until is not None:
        conditions.append(Invocation.scheduled_for < until)
    matched = session.execute(select(func.count()).where(*conditions)).scalar_one()
    if dry_run or not matched:
        return Replayed(matched=matched, created=[], trigger_gone=0)
    rows = session.execute(
        select(Invocation, Trigger)
        .outerjoin(Trigger, Trigger.id == Invocation.trigger_id)
        .where(*conditions)
        .order_by(Invocation.scheduled_for, Invocation.id)
        .limit(min(limit, MAX_PER_CALL))
    ).all()
    created: list[tuple[uuid.UUID, InvocationKey]] = []
    # Each replay of a trigger is keyed a microsecond after the one before it, so a
    # call replaying hundreds of one trigger's runs never exhausts manual keys.
    next_at: dict[uuid.UUID, dt.datetime] = {}
    gone = 0
    for original, trigger in rows:
        if trigger is None:
            gone += 1
            continue
        replay_id = uuid.uuid4()
        linked = session.execute(
            pg_insert(InvocationReplay)
            .values(original_id=original.id, replay_id=replay_id, tenant_id=tenant_id)
            .on_conflict_do_nothing(index_elements=["original_id"])
            .returning(InvocationReplay.original_id)
        ).scalar_one_or_none()
        if linked is None:  # another call replayed it since the count
            continue
        key = insert_manual(session, trigger, now=now, at=next_at.get(trigger.id),
                            id=replay_id, replay_of=original.id,
                            occurrence_at=original.occurrence_instant)
        next_at[trigger.id] = key.scheduled_for + dt.timedelta(microseconds=1)
        created.append((original.id, key))
    return Replayed(matched=matched, created=created, trigger_gone=gone)
