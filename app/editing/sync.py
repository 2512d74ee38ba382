"""Declarative sync: make a project's triggers exactly the given set, in one transaction.

Triggers are matched by name: a new name is created, a known one is updated when its
definition differs (and left alone, version and all, when it does not), and every
trigger the set does not name is deleted. ``next_run_at`` follows the same rule as a
single save (:func:`app.editing.definitions.next_run_after_save`), computed once per distinct
(expression, zone) and written set-based: one INSERT, one UPDATE ... FROM (VALUES ...),
one DELETE, whatever the size of the set. A one-time trigger that already fired stays
finished while its ``run_at`` is unchanged, whatever ``enabled`` the definition says.

As with a single save, disabling a trigger stops its scheduled invocations (and a
definition that says ``enabled: false`` for a one-time trigger that fired stops its
retries), and an update or delete that moves the ``next_run_at`` of a trigger already
due records the occurrences it takes away as missed
(:func:`app.schedule.occurrences.missed_rows`), in one INSERT.

Code-managed triggers (app.editing.managed): a sync by their owner (``cronbeat sync``,
``owner`` given) marks every trigger it writes as the owner's and keeps each stored
trigger's paused state (pausing is the operator's); any other sync that would change or
delete a trigger managed by other code is refused unless forced, and a forced one
leaves it marked.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import cast, column, delete, insert, update, values
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.editing import managed
from app.editing.definitions import EDITABLE, apply_definition, is_finished_one_time
from app.errors import InvalidTrigger, NameTaken
from app.limits import MAX_SYNC_TRIGGERS
from app.models import Trigger
from app.queries.cancellation import (
    DELETED_REASON,
    cancel_held,
    cancel_pending,
    stop_scheduled_runs,
)
from app.queries.missed import record_missed
from app.queries.triggers import project_triggers
from app.schedule import occurrences
from app.schedule.kinds import Schedule

# The columns an update rewrites: the whole definition, plus what saving derives.
_UPDATED = (*EDITABLE, "next_run_at", "version", "updated_at")


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """What a sync changed (or, in a dry run, would change), by trigger name."""

    created: list[str]
    updated: list[str]
    deleted: list[str]
    unchanged: list[str]
    #: The secrets generated for webhooks that had none, to show once (empty in a dry run).
    signing_secrets: dict[str, str]
    #: The rows it created or changed, as saved (the definition and next_run_at).
    saved: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def sync_triggers(
    session: Session,
    tenant_id: str,
    project_id: str,
    desired: Sequence[Mapping[str, Any]],
    *,
    now: dt.datetime,
    dry_run: bool = False,
    owner: str | None = None,
    force: bool = False,
) -> SyncResult:
    """Make the project's triggers the ``desired`` definitions (see the module doc).

    A definition without ``signing_secret`` keeps the stored secret of its webhook; a new
    webhook without one gets a fresh secret. ``dry_run`` checks and diffs everything but
    writes nothing. ``owner``: the code whose declarations these are ("MODULE:APP"),
    None for the API; ``force``: change and delete triggers other code manages too.

    Returns:
        The names created, updated, deleted and left unchanged.

    Raises:
        InvalidTrigger: a definition is invalid, or two share a name (field ``triggers``);
            nothing is written then.
        NameTaken: a concurrent create took a new name first.
        CodeManaged: without ``force``, the sync would change or delete triggers that
            code other than ``owner`` manages (each is named); nothing is written then.
    """
    if len(desired) > MAX_SYNC_TRIGGERS:
        raise InvalidTrigger("triggers", f"at most {MAX_SYNC_TRIGGERS} triggers per sync")
    names = [definition["name"] for definition in desired]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidTrigger("triggers", f"duplicate names: {', '.join(duplicates)}")
    # Locked unless a dry run: two syncs of one project run one after the other, so the
    # second diffs against what the first wrote instead of both inserting the same names.
    existing = {t.name: t for t in project_triggers(session, tenant_id, project_id,
                                                    lock=not dry_run)}

    cache: dict[Schedule, dt.datetime] = {}
    created: list[dict[str, Any]] = []
    updated: list[dict[str, Any]] = []
    unchanged: list[str] = []
    stopping: list[uuid.UUID] = []
    rescheduled: list[uuid.UUID] = []
    missed: list[dict[str, Any]] = []
    secrets: dict[str, str] = {}
    others: list[Trigger] = []  # code-managed by another, and changed or deleted
    for position, definition in enumerate(desired):
        old = existing.get(definition["name"])
        try:
            applied = apply_definition(
                old, _owned(definition, old, owner), now=now,
                explicit_enabled=definition.get("enabled"),
                declarative=True, generate_secret=not dry_run, cache=cache)
        except InvalidTrigger as exc:
            # Keyed by the trigger's name: a sync file is edited by name, not by index.
            name = str(definition.get("name", position))
            raise InvalidTrigger(f"triggers.{name}.{exc.field}", exc.message,
                                 path=("triggers", name, *exc.path)) from None
        row = applied.row
        if managed.refused_save(old, row, owner):
            assert old is not None
            others.append(old)
        if applied.generated_secret is not None:
            secrets[row["name"]] = applied.generated_secret
        if applied.stop_runs:
            assert old is not None
            stopping.append(old.id)
        elif applied.rescheduled:
            assert old is not None
            rescheduled.append(old.id)
        if not applied.changed:
            unchanged.append(row["name"])
            continue
        row["next_run_at"] = applied.next_run_at
        row["updated_at"] = now
        if old is None:
            created.append({**row, "tenant_id": tenant_id, "project_id": project_id,
                            "version": 1, "created_at": now})
        else:
            missed.extend(applied.missed)
            updated.append({**row, "id": old.id, "version": old.version + 1})
    wanted = set(names)
    gone = [t for name, t in existing.items() if name not in wanted]
    others.extend(t for t in gone if managed.owned_elsewhere(t, owner))
    managed.guard(others, force=force, edit="sync", by_name=True, log_forced=not dry_run)
    result = SyncResult(
        created=sorted(row["name"] for row in created),
        updated=sorted(row["name"] for row in updated),
        deleted=sorted(t.name for t in gone),
        unchanged=sorted(unchanged),
        signing_secrets={} if dry_run else secrets,
        saved=[*created, *updated],
    )
    if dry_run:
        return result

    cancel_pending(session, tenant_id, [t.id for t in gone], now=now, reason=DELETED_REASON)
    stop_scheduled_runs(session, tenant_id, stopping, now=now)
    cancel_held(session, tenant_id, rescheduled, now=now)
    for trigger in gone:
        missed.extend(occurrences.missed_rows(trigger, None, now=now,
                                          reason=occurrences.DELETED_REASON))
    # Before the DELETE: the rows of deleted triggers need them to exist (the foreign
    # key then sets their trigger_id NULL, as for the rest of their history).
    record_missed(session, missed)
    if gone:
        session.execute(
            delete(Trigger)
            .where(Trigger.tenant_id == tenant_id, Trigger.id.in_([t.id for t in gone]))
            .execution_options(synchronize_session=False)
        )
    if updated:
        _update_rows(session, tenant_id, project_id, updated)
    if created:
        _insert_rows(session, created)
    # The ORM objects loaded above are stale now; nobody should read them from this session.
    session.expire_all()
    return result


def _owned(definition: Mapping[str, Any], old: Trigger | None, owner: str | None,
           ) -> dict[str, Any]:
    """The definition as its sync saves it: marked with its owner (the API keeps the
    stored mark); an owner's sync leaves a paused trigger paused (a fired one-time
    trigger is disabled too, but not paused: apply_definition decides it)."""
    if owner is None:
        return {**definition, "managed_by": None if old is None else old.managed_by}
    paused = old is not None and not old.enabled and not is_finished_one_time(old)
    return {**definition, **({"enabled": False} if paused else {}), "managed_by": owner}


def _update_rows(
    session: Session, tenant_id: str, project_id: str, rows: list[dict[str, Any]]
) -> None:
    table = Trigger.__table__
    # Literal VALUES rows arrive untyped (text); each column is cast back to its type.
    source = values(
        *[column(name, table.c[name].type) for name in ("id", *_UPDATED)], name="v"
    ).data([tuple(row[name] for name in ("id", *_UPDATED)) for row in rows])
    session.execute(
        update(table)
        .where(
            table.c.id == cast(source.c.id, UUID(as_uuid=True)),
            table.c.tenant_id == tenant_id,
            table.c.project_id == project_id,
        )
        .values({name: cast(source.c[name], table.c[name].type) for name in _UPDATED})
    )


def _insert_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    # Batched into multi-row INSERTs by SQLAlchemy. The project's lock (app.queries.locks)
    # keeps other syncs away, but a single create may still take a new name first.
    try:
        with session.begin_nested():
            session.execute(insert(Trigger.__table__), rows)
    except IntegrityError as exc:
        if "uq_triggers_tenant_id_project_id_name" in str(exc.orig):
            raise NameTaken("a trigger of one of the new names was created meanwhile") from None
        raise
