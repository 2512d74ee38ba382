"""Editing triggers: the verbs the API and the CLI call (issue #3).

Every function takes the caller's ``Session`` and never commits: a request opens one
transaction and everything it changes lands together or not at all. Every statement
filters by tenant and project, so one tenant can never read or touch another's rows; a
trigger of another tenant is simply "not found".

``next_run_at`` is decided here when a trigger is saved (see :func:`next_run_after_save`):
saving never fires a run by itself, and re-enabling never fires a burst of the
occurrences missed while the trigger was off, because the next one is counted from now.
An edit that moves the ``next_run_at`` of a trigger already due records the occurrences
it takes away as missed (:func:`app.schedule.occurrences.missed_rows`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import delete, func, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.editing import managed
from app.editing.definitions import (
    DEFAULTS,
    EDITABLE,
    KIND_COLUMNS,
    TARGET_COLUMNS,
    anchored,
    apply_definition,
    complete_definition,
    next_run_after_save,
)
from app.enums import InvocationStatus
from app.errors import NameTaken, NotFound, StaleVersion
from app.models import Invocation, Trigger
from app.queries import triggers as queries
from app.queries.cancellation import (
    DELETED_REASON,
    cancel_held,
    cancel_pending,
    stop_scheduled_runs,
)
from app.queries.missed import record_missed
from app.schedule import occurrences
from app.targets import target_of

_NAME_CONSTRAINT = "uq_triggers_tenant_id_project_id_name"


@contextlib.contextmanager
def _unique_name(session: Session, name: str) -> Iterator[None]:
    # Changes made inside the block are flushed inside a savepoint, so a duplicate name
    # becomes NameTaken and the caller's transaction stays usable. (Opening the savepoint
    # flushes what was pending before it: the changes must be made inside.) The unique
    # constraint, not a prior SELECT, decides: two requests taking one name at once
    # cannot both pass it.
    try:
        with session.begin_nested():
            yield
            session.flush()
    except IntegrityError as exc:
        if _NAME_CONSTRAINT in str(exc.orig):
            raise NameTaken(f"a trigger named {name!r} already exists") from None
        raise


def get_trigger(
    session: Session, tenant_id: str, project_id: str, trigger_id: uuid.UUID, *,
    for_update: bool = False,
) -> Trigger:
    """Return the project's trigger ``trigger_id``.

    Raises:
        NotFound: no such trigger in this tenant's project.
    """
    trigger = queries.one_trigger(session, tenant_id, project_id, trigger_id, lock=for_update)
    if trigger is None:
        raise NotFound("trigger not found")
    return trigger


def list_triggers(
    session: Session, tenant_id: str, project_id: str, *, limit: int,
    enabled: bool | None = None, ref: str | None = None, name_prefix: str | None = None,
    after_id: uuid.UUID | None = None,
) -> list[Trigger]:
    """Return up to ``limit`` of the project's triggers ordered by id, after ``after_id``."""
    statement = select(Trigger).where(
        Trigger.tenant_id == tenant_id, Trigger.project_id == project_id
    )
    if enabled is not None:
        statement = statement.where(Trigger.enabled.is_(enabled))
    if ref is not None:
        statement = statement.where(Trigger.ref == ref)
    if name_prefix:
        statement = statement.where(Trigger.name.startswith(name_prefix, autoescape=True))
    if after_id is not None:
        statement = statement.where(Trigger.id > after_id)
    return list(session.execute(statement.order_by(Trigger.id).limit(limit)).scalars())


def create_trigger(
    session: Session, tenant_id: str, project_id: str, values: Mapping[str, Any], *,
    now: dt.datetime,
) -> Trigger:
    """Create a trigger; a webhook without a signing secret gets a fresh one.

    Returns:
        The new trigger, flushed (its ``signing_secret`` is the one to show, once).

    Raises:
        InvalidTrigger: the definition is invalid (see :func:`complete_definition`).
        NameTaken: the project has a trigger of that name.
    """
    row = complete_definition(anchored(values, None, now))
    target_of(row["target_kind"]).prepare_save(row, None, generate_secret=True)
    trigger = Trigger(
        tenant_id=tenant_id, project_id=project_id, **row,
        next_run_at=next_run_after_save(None, row, now),
        version=1, created_at=now, updated_at=now,
    )
    with _unique_name(session, row["name"]):
        session.add(trigger)
    return trigger


def update_trigger(
    session: Session, tenant_id: str, project_id: str, trigger_id: uuid.UUID,
    changes: Mapping[str, Any], *, now: dt.datetime, expected_version: int | None = None,
    force: bool = False,
) -> tuple[Trigger, str | None]:
    """Apply a partial update, bump ``version`` and ``updated_at``; a no-op writes nothing.

    Giving one schedule kind's column (``cron_expression``, ``run_at``, ``interval_s``)
    clears the other kinds' (an interval's ``start_at`` included); giving
    ``target_kind`` replaces the whole target (a webhook keeps its secret unless a new one
    is given). ``enabled: false`` stops the trigger's scheduled invocations
    (:func:`app.queries.cancellation.stop_scheduled_runs`) even when the trigger is disabled
    already: a one-time trigger that fired is, and its retries must stop too. An edit
    that moves the ``next_run_at`` of a due trigger records what it takes away as missed.
    A code-managed trigger's definition changes only when ``force`` is given (its paused
    state always may: see app.editing.managed); it stays code-managed either way.

    Returns:
        The trigger, and the signing secret generated for it if the target became a
        webhook without one (to show once), else None.

    Raises:
        NotFound: no such trigger in this tenant's project.
        StaleVersion: ``expected_version`` is given and is not the stored version.
        CodeManaged: the trigger is code-managed, the change is more than a pause or a
            resume, and ``force`` is not given.
        InvalidTrigger, NameTaken: as :func:`create_trigger`.
    """
    # The row lock makes the version check and the write one atomic step: two writers
    # holding the same ETag cannot both pass it.
    trigger = get_trigger(session, tenant_id, project_id, trigger_id, for_update=True)
    if expected_version is not None and trigger.version != expected_version:
        raise StaleVersion(f"the trigger is at version {trigger.version}")
    merged = {column: getattr(trigger, column) for column in EDITABLE}
    if "target_kind" in changes:
        # A new target starts from the defaults; a webhook's signing secret is kept
        # (a task target's is none), so switching back does not rotate it.
        old_secret = trigger.signing_secret
        merged.update({column: DEFAULTS[column] for column in TARGET_COLUMNS})
        merged["signing_secret"] = old_secret
    merged.update(changes)
    for kind in KIND_COLUMNS:
        if changes.get(kind) is not None:
            # A new kind of schedule replaces the old kind's (both given: refused).
            for other, columns in KIND_COLUMNS.items():
                if other != kind and other not in changes:
                    merged.update(dict.fromkeys(columns))
    applied = apply_definition(trigger, merged, now=now,
                               explicit_enabled=changes.get("enabled"), declarative=False)
    if managed.refused_save(trigger, applied.row, None):
        managed.guard([trigger], force=force, edit="update")
    if applied.stop_runs:
        stop_scheduled_runs(session, tenant_id, [trigger.id], now=now)
    elif applied.rescheduled:
        cancel_held(session, tenant_id, [trigger.id], now=now)
    if not applied.changed:
        # Nothing differs (an empty PATCH, a resume of a running trigger): no write, so
        # the version, the ETag and updated_at stay what the caller may already hold.
        return trigger, None
    with _unique_name(session, applied.row["name"]):
        for column, value in applied.row.items():
            setattr(trigger, column, value)
        trigger.next_run_at = applied.next_run_at
        trigger.version += 1
        trigger.updated_at = now
    # Only once the write stands: a caller that catches NameTaken and commits must not
    # keep missed rows for occurrences the dispatcher will still run.
    record_missed(session, applied.missed)
    return trigger, applied.generated_secret


def pause_trigger(
    session: Session, tenant_id: str, project_id: str, trigger_id: uuid.UUID, *,
    now: dt.datetime, note: str | None = None, expected_version: int | None = None,
) -> Trigger:
    """Pause: :func:`update_trigger` with ``enabled: false``, keeping ``note`` (or none).

    A note that differs is a change too (the version moves on).
    """
    trigger, _ = update_trigger(session, tenant_id, project_id, trigger_id,
                                {"enabled": False}, now=now, expected_version=expected_version)
    note = (note or "").strip() or None
    if trigger.pause_note != note:
        trigger.pause_note = note
        trigger.version += 1
        trigger.updated_at = now
    return trigger


def resume_trigger(
    session: Session, tenant_id: str, project_id: str, trigger_id: uuid.UUID, *,
    now: dt.datetime, expected_version: int | None = None,
) -> Trigger:
    """Resume: :func:`update_trigger` with ``enabled: true``; the pause's note goes."""
    trigger, _ = update_trigger(session, tenant_id, project_id, trigger_id,
                                {"enabled": True}, now=now, expected_version=expected_version)
    if trigger.pause_note is not None:
        trigger.pause_note = None
        trigger.version += 1
        trigger.updated_at = now
    return trigger


#: How a trigger list can be ordered: by (project, name), by next run (soonest first,
#: none last) or by last scheduled run (latest first, never last).
TRIGGER_ORDERS = ("name", "next", "last")
_NEVER_AFTER = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)
_NEVER_BEFORE = dt.datetime(1, 1, 1, tzinfo=dt.UTC)


def order_key(order: str) -> tuple[tuple[Any, ...], bool]:
    """The expressions a list ``order`` sorts by (a unique key), and whether descending."""
    if order == "next":
        return (func.coalesce(Trigger.next_run_at, _NEVER_AFTER), Trigger.id), False
    if order == "last":
        return (func.coalesce(Trigger.last_scheduled_for, _NEVER_BEFORE), Trigger.id), True
    return (Trigger.project_id, Trigger.name), False


def order_cursor(trigger: Trigger, order: str) -> tuple[Any, ...]:
    """``trigger``'s values of :func:`order_key`: the ``after`` of the page that follows."""
    if order == "next":
        return (trigger.next_run_at or _NEVER_AFTER, trigger.id)
    if order == "last":
        return (trigger.last_scheduled_for or _NEVER_BEFORE, trigger.id)
    return (trigger.project_id, trigger.name)


def search_triggers(
    session: Session, tenant_id: str, *, limit: int, text: str | None = None,
    enabled: bool | None = None, failing: bool = False, order: str = "name",
    after: tuple[Any, ...] | None = None,
) -> list[Trigger]:
    """The tenant's triggers across its projects in ``order`` (:data:`TRIGGER_ORDERS`),
    after ``after`` (:func:`order_cursor` of the previous page's last row).

    ``text`` matches a part of the name or the ref, case-insensitively; ``failing`` keeps
    those whose latest invocation failed. By name, the (tenant, project, name) unique
    index serves the order, so a page reads as many rows as it shows (fewer for a rare
    ``text``); by next or last run, the tenant's matching triggers are sorted.
    """
    statement = select(Trigger).where(Trigger.tenant_id == tenant_id)
    if text:
        statement = statement.where(or_(Trigger.name.icontains(text, autoescape=True),
                                        Trigger.ref.icontains(text, autoescape=True)))
    if enabled is not None:
        statement = statement.where(Trigger.enabled.is_(enabled))
    if failing:
        # As last_invocations: first at or after last_scheduled_for (run-time pruned to
        # the last days' partitions), every partition only when nothing is there.
        def latest(*bound: Any) -> Any:
            return (
                select(Invocation.status)
                .where(Invocation.tenant_id == tenant_id, Invocation.trigger_id == Trigger.id,
                       *bound)
                .order_by(Invocation.scheduled_for.desc())
                .limit(1)
                .scalar_subquery()
            )
        status = func.coalesce(
            latest(Invocation.scheduled_for >= Trigger.last_scheduled_for), latest())
        statement = statement.where(status == InvocationStatus.FAILED)
    key, descending = order_key(order)
    if after is not None:
        statement = statement.where(
            tuple_(*key) < tuple_(*after) if descending else tuple_(*key) > tuple_(*after))
    statement = statement.order_by(
        *(column.desc() if descending else column for column in key)).limit(limit)
    return list(session.execute(statement).scalars())


def delete_trigger(
    session: Session, tenant_id: str, project_id: str, trigger_id: uuid.UUID, *,
    now: dt.datetime, expected_version: int | None = None, force: bool = False,
) -> None:
    """Delete a trigger after cancelling its pending invocations (its history stays).

    A due occurrence not recorded yet is recorded missed (see
    :func:`app.schedule.occurrences.missed_rows`).

    Raises:
        NotFound: no such trigger in this tenant's project.
        StaleVersion: ``expected_version`` is given and is not the stored version.
        CodeManaged: the trigger is code-managed and ``force`` is not given.
    """
    trigger = get_trigger(session, tenant_id, project_id, trigger_id, for_update=True)
    if expected_version is not None and trigger.version != expected_version:
        raise StaleVersion(f"the trigger is at version {trigger.version}")
    managed.guard([trigger], force=force, edit="delete")
    cancel_pending(session, tenant_id, [trigger.id], now=now, reason=DELETED_REASON)
    record_missed(session, occurrences.missed_rows(
        trigger, None, now=now, reason=occurrences.DELETED_REASON))
    session.delete(trigger)
    session.flush()


def delete_triggers_by_ref(
    session: Session, tenant_id: str, project_id: str, ref: str, *, now: dt.datetime,
    force: bool = False,
) -> int:
    """Delete every trigger of the project carrying ``ref``; returns how many.

    As :func:`delete_trigger`, set-based: one statement per step, whatever the count.

    Raises:
        CodeManaged: one of them is code-managed and ``force`` is not given (none is
            deleted).
    """
    # The project's lock first, then the rows in id order (app.queries), as a sync does.
    gone = queries.project_triggers_with_ref(session, tenant_id, project_id, ref)
    managed.guard(gone, force=force, edit="delete by ref", by_name=True)
    ids = [trigger.id for trigger in gone]
    cancel_pending(session, tenant_id, ids, now=now, reason=DELETED_REASON)
    record_missed(session, [
        row for trigger in gone
        for row in occurrences.missed_rows(trigger, None, now=now,
                                           reason=occurrences.DELETED_REASON)
    ])
    if ids:
        session.execute(
            delete(Trigger).where(Trigger.tenant_id == tenant_id, Trigger.id.in_(ids))
            .execution_options(synchronize_session=False)
        )
    return len(ids)

