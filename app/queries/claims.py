"""The dispatcher's concurrency-critical statements: one function per operation.

Every function takes the caller's ``Session`` and never commits; statements run on its
connection as Core statements (the ORM's per-row bookkeeping costs more than the SQL on
a batch of thousands). Each statement is
set-based over the whole batch (one round trip, not one per row). Several dispatchers
(several beats, a manual tick beside beat) may run these at the same time; the comment
beside each says why that is safe.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    Row,
    Text,
    and_,
    bindparam,
    case,
    cast,
    column,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import TableValuedAlias

from app.enums import InvocationStatus
from app.models import DispatcherHeartbeat, Invocation, InvocationKey, Trigger
from app.queries.locks import by_id

_TS = DateTime(timezone=True)
MISSED_REASON = "missed: the scheduler saw it later than the trigger's misfire grace"


def _pg_array(name: str, values: Iterable[object], element_type: Any) -> ColumnElement[Any]:
    """Bind ``values`` as one array-literal parameter cast to ``element_type[]``.

    psycopg2 sends a Python list as ``ARRAY[v1, v2, ...]``: an expression per element,
    which PostgreSQL parses one by one (a third of a second for 5,000 uuids). One
    ``'{v1,v2,...}'`` string goes through the array input function in one go. Only
    uuids, timestamps and booleans are passed, whose text forms need no quoting.
    """
    return cast(
        bindparam(name, "{" + ",".join(_array_element(v) for v in values) + "}", type_=Text),
        ARRAY(element_type),
    )


def _unnest(alias: str, *columns: tuple[str, Any, Sequence[object]]) -> TableValuedAlias:
    """``unnest(a1, a2, ...) AS alias(c1, c2, ...)``: one row per index of parallel arrays."""
    return (
        func.unnest(*(_pg_array(f"{alias}_{name}", values, type_)
                      for name, type_, values in columns))
        .table_valued(*(column(name, type_) for name, type_, _ in columns))
        .render_derived(name=alias)
    )


def _array_element(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        assert value.tzinfo is not None, "timestamps are aware"
        return value.isoformat()
    if isinstance(value, str):
        # Quoted, with backslashes and double quotes escaped: array input syntax.
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"no array literal for {type(value).__name__}")


_CLAIM_COLUMNS = (
    Trigger.id,
    Trigger.tenant_id,
    Trigger.project_id,
    Trigger.cron_expression,
    Trigger.timezone,
    Trigger.run_at,
    Trigger.interval_s,
    Trigger.start_at,
    Trigger.next_run_at,
    Trigger.misfire_policy,
    Trigger.misfire_grace_s,
)


def claim_due_triggers(
    session: Session, now: dt.datetime, limit: int, *, hold_until: dt.datetime | None = None,
) -> Sequence[Row[Any]]:
    """Lock and return up to ``limit`` enabled triggers due at ``now``, fairly by tenant;
    with ``hold_until``, also those of a held kind (one-time and interval triggers: not
    cron, app.schedule.kinds.Schedule.held) due by then.

    Fair: the batch takes each tenant's oldest due trigger, then each tenant's second,
    and so on (oldest first within each round), so a tenant with 100,000 due triggers
    puts its first ones in the batch beside every other tenant's, not ahead of them.
    """
    # FOR UPDATE SKIP LOCKED: a second dispatcher skips the rows this one holds instead
    # of waiting, and finds them advanced (no longer due) once this one commits; under
    # READ COMMITTED a row it reads after that commit is re-checked against the WHERE
    # (which is why the due condition is on the locked table itself). The ranking reads
    # only due rows (ix_triggers_due's predicate); it cannot take the locks itself
    # (FOR UPDATE refuses window functions), so it picks candidates that are then locked.
    due = and_(Trigger.enabled, Trigger.next_run_at.is_not(None), Trigger.next_run_at <= now)
    if hold_until is not None and hold_until > now:
        # Two index ranges, OR-ed: ix_triggers_due up to now, ix_triggers_held_due (no
        # cron rows) up to hold_until. Next minute's cron rows are never read.
        due = and_(Trigger.enabled, Trigger.next_run_at.is_not(None),
                   or_(Trigger.next_run_at <= now,
                       and_(Trigger.cron_expression.is_(None),
                            Trigger.next_run_at <= hold_until)))
    round_ = func.row_number().over(
        partition_by=Trigger.tenant_id, order_by=Trigger.next_run_at
    ).label("round")
    ranked = select(Trigger.id, Trigger.next_run_at, round_).where(due).subquery("ranked")
    candidates = (
        select(ranked.c.id, ranked.c.round, ranked.c.next_run_at)
        .order_by(ranked.c.round, ranked.c.next_run_at)
        .limit(limit)
        .subquery("candidates")
    )
    fair = (
        select(*_CLAIM_COLUMNS)
        .join(candidates, candidates.c.id == Trigger.id)
        .where(due)
        .order_by(candidates.c.round, candidates.c.next_run_at)
        .with_for_update(of=Trigger, skip_locked=True)
    )
    rows = session.connection().execute(fair).all()
    if rows:
        return rows
    # Every candidate is held by another dispatcher (or nothing is due): the plain
    # claim by due time decides whether anything is left for this one.
    plain = (
        select(*_CLAIM_COLUMNS)
        .where(due)
        .order_by(Trigger.next_run_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return session.connection().execute(plain).all()


#: insert_invocations' status for a run it parked.
PARKED = "parked"


def insert_invocations(
    session: Session,
    *,
    trigger_ids: Sequence[uuid.UUID],
    tenant_ids: Sequence[str],
    project_ids: Sequence[str],
    scheduled_fors: Sequence[dt.datetime],
    misseds: Sequence[bool],
    reasons: Sequence[str | None],
    now: dt.datetime,
    parked_ats: Sequence[dt.datetime | None] | None = None,
) -> list[tuple[InvocationKey, str]]:
    """Insert one invocation per occurrence; return (key, status) of the rows inserted,
    the status ``parked`` for a run parked (no message: app.queries.parking).

    A pending row is recorded as published at ``now`` (its message goes out right after
    the commit; if that publish fails, :func:`unmark_published` says so), unless
    ``parked_ats`` parks it. A missed row carries its reason (``reasons``, or
    :data:`MISSED_REASON` where None).
    """
    # ON CONFLICT DO NOTHING on UNIQUE (trigger_id, scheduled_for): should any path ever
    # record an occurrence twice (a dispatcher racing a trigger edit, a replayed batch),
    # the database keeps the first and the second inserts nothing, so it is never
    # published twice. Missed rows are final at birth.
    source = _unnest(
        "occurrence",
        ("trigger_id", UUID(as_uuid=True), trigger_ids),
        ("tenant_id", Text, tenant_ids),
        ("project_id", Text, project_ids),
        ("scheduled_for", _TS, scheduled_fors),
        ("missed", Boolean, misseds),
        ("reason", Text, reasons),
        ("parked_at", _TS, parked_ats or [None] * len(trigger_ids)),
    )
    missed = source.c.missed
    parked = source.c.parked_at.is_not(None)
    # The tenant and project come with the claim (claim_due_triggers): no join back to
    # the triggers the caller holds locked.
    rows = select(
        source.c.trigger_id,
        source.c.tenant_id,
        source.c.project_id,
        source.c.scheduled_for,
        case(
            (missed, InvocationStatus.MISSED.value), else_=InvocationStatus.PENDING.value
        ),
        literal(now, _TS),
        case((missed, literal(now, _TS)), else_=None),
        case((missed, func.coalesce(source.c.reason, literal(MISSED_REASON))), else_=None),
        case((missed, None), (parked, None), else_=literal(now, _TS)),
        source.c.parked_at,
        # A run taken ahead (a held kind) is not claimable before its instant.
        case((and_(~missed, source.c.scheduled_for > literal(now, _TS)),
              source.c.scheduled_for), else_=None),
    ).select_from(source)
    invocations = Invocation.__table__
    statement = (
        pg_insert(invocations)
        .from_select(
            [
                invocations.c.trigger_id,
                invocations.c.tenant_id,
                invocations.c.project_id,
                invocations.c.scheduled_for,
                invocations.c.status,
                invocations.c.created_at,
                invocations.c.finished_at,
                invocations.c.last_error,
                invocations.c.enqueued_at,
                invocations.c.parked_at,
                invocations.c.run_after,
            ],
            rows,
        )
        .on_conflict_do_nothing(constraint="uq_invocations_trigger_id_scheduled_for")
        .returning(invocations.c.id, invocations.c.scheduled_for, invocations.c.status,
                   invocations.c.parked_at)
    )
    return [(InvocationKey(row.id, row.scheduled_for),
             PARKED if row.parked_at is not None else row.status)
            for row in session.connection().execute(statement)]


def record_unschedulable(
    session: Session,
    *,
    trigger_id: uuid.UUID,
    tenant_id: str,
    project_id: str,
    scheduled_for: dt.datetime,
    reason: str,
    now: dt.datetime,
) -> None:
    """Record a claimed trigger's due occurrence as failed: its schedule cannot be computed."""
    # Rare (a broken row), so one plain statement; ON CONFLICT for the same reason as
    # insert_invocations. The caller's advance_triggers disables the trigger.
    session.connection().execute(
        pg_insert(Invocation)
        .values(
            trigger_id=trigger_id,
            tenant_id=tenant_id,
            project_id=project_id,
            scheduled_for=scheduled_for,
            status=InvocationStatus.FAILED,
            created_at=now,
            finished_at=now,
            last_error=reason,
        )
        .on_conflict_do_nothing(constraint="uq_invocations_trigger_id_scheduled_for")
    )


def advance_triggers(
    session: Session,
    *,
    trigger_ids: Sequence[uuid.UUID],
    next_run_ats: Sequence[dt.datetime | None],
    last_scheduled_fors: Sequence[dt.datetime | None],
    enableds: Sequence[bool],
) -> None:
    """Set each claimed trigger's next occurrence (NULL and disabled when finished)."""
    # The rows are locked by claim_due_triggers in this transaction, so no other
    # dispatcher can advance them in between; an API edit waits for the lock.
    source = _unnest(
        "advance",
        ("id", UUID(as_uuid=True), trigger_ids),
        ("next_run_at", _TS, next_run_ats),
        ("last_scheduled_for", _TS, last_scheduled_fors),
        ("enabled", Boolean, enableds),
    )
    statement = (
        update(Trigger)
        .where(Trigger.id == source.c.id)
        .values(
            next_run_at=source.c.next_run_at,
            last_scheduled_for=func.coalesce(
                source.c.last_scheduled_for, Trigger.last_scheduled_for
            ),
            enabled=source.c.enabled,
        )
        .execution_options(synchronize_session=False)
    )
    session.connection().execute(statement)


def mark_published(session: Session, invocation_ids: Sequence[uuid.UUID], now: dt.datetime) -> int:
    """Record that the messages of these invocations are in the broker; returns the count."""
    # Only rows still pending: a fast worker may already have claimed one, and its
    # enqueued_at then stays as it was (NULL means "not published" only while pending).
    # SKIP LOCKED (app.queries.locks): a row a cancel or a worker holds is left as it is, so this
    # never waits and can be part of no deadlock. Such a row is about to stop being
    # pending anyway; if not, its NULL or older enqueued_at makes the sweep publish it
    # again, and a duplicate message is harmless.
    locked = by_id(
        Invocation.id == func.any(_pg_array("pub_ids", invocation_ids, UUID(as_uuid=True))),
        Invocation.status == InvocationStatus.PENDING,
        skip_locked=True,
    )
    statement = (
        update(Invocation)
        .where(Invocation.id.in_(locked.scalar_subquery()))
        .values(enqueued_at=now)
        .execution_options(synchronize_session=False)
    )
    return session.connection().execute(statement).rowcount


def unmark_published(session: Session, invocation_ids: Sequence[uuid.UUID],
                     now: dt.datetime) -> int:
    """Record that these invocations' messages did not go out (the publish failed)."""
    # Only the rows this tick marked and nobody has claimed since; SKIP LOCKED as in
    # mark_published. The next tick's take_unpublished publishes them.
    locked = by_id(
        Invocation.id == func.any(_pg_array("unpub_ids", invocation_ids, UUID(as_uuid=True))),
        Invocation.status == InvocationStatus.PENDING,
        Invocation.enqueued_at == now,
        skip_locked=True,
    )
    statement = (
        update(Invocation)
        .where(Invocation.id.in_(locked.scalar_subquery()))
        .values(enqueued_at=None)
        .execution_options(synchronize_session=False)
    )
    return session.connection().execute(statement).rowcount


def record_tick(
    session: Session,
    *,
    started_at: dt.datetime,
    duration_ms: float,
    deployment_id: str | None,
    report: dict[str, Any],
) -> None:
    """Record the tick that just ended as the dispatcher's heartbeat."""
    # Last writer wins; ticks that overlap (several beats) record whichever ended last,
    # which is what "when did a tick last run" means.
    session.connection().execute(
        update(DispatcherHeartbeat)
        .where(DispatcherHeartbeat.id == 1)
        .values(
            last_tick_at=started_at,
            last_tick_duration_ms=duration_ms,
            last_tick_deployment_id=deployment_id,
            last_tick_report=report,
        )
    )


def note_broker_epoch(session: Session, epoch: str) -> bool:
    """Record the broker's epoch; True if it changed since the last one recorded (the
    broker lost its data meanwhile), False the first time and while it is the same."""
    # The row lock makes one dispatcher of several see the change, and only once.
    previous = session.connection().execute(
        select(DispatcherHeartbeat.broker_epoch).where(DispatcherHeartbeat.id == 1)
        .with_for_update()
    ).scalar_one_or_none()
    if previous == epoch:
        return False
    session.connection().execute(
        update(DispatcherHeartbeat).where(DispatcherHeartbeat.id == 1)
        .values(broker_epoch=epoch)
    )
    return previous is not None
