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

import base64
import contextlib
import dataclasses
import datetime as dt
import secrets
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.enums import MisfirePolicy, OverlapPolicy, TargetKind
from app.errors import InvalidSchedule, InvalidTrigger, NameTaken, NotFound, StaleVersion
from app.limits import RUN_AT_LIMIT
from app.models import Trigger
from app.queries import triggers as queries
from app.queries.cancellation import DELETED_REASON, cancel_pending, stop_scheduled_runs
from app.queries.missed import record_missed
from app.schedule import occurrences, scheduling

# What a trigger gets for every column its definition leaves out. Kept here rather than
# read back from the server defaults so that a declarative sync can tell "unchanged"
# from "changed" without a round trip.
DEFAULTS: dict[str, Any] = {
    "description": "",
    "enabled": True,
    "cron_expression": None,
    "timezone": "UTC",
    "run_at": None,
    "target_kind": TargetKind.WEBHOOK,
    "webhook_url": None,
    "webhook_method": "POST",
    "webhook_headers": {},
    "signing_secret": None,
    "task_name": None,
    "task_queue": None,
    "payload": {},
    "message_template": None,
    "max_attempts": 3,
    "backoff_base_s": 2,
    "backoff_cap_s": 300,
    "timeout_s": 30,
    "misfire_policy": MisfirePolicy.RUN_ONCE,
    "misfire_grace_s": 300,
    "overlap_policy": OverlapPolicy.ALLOW,
    "ref": None,
}
#: The columns a definition may set.
EDITABLE = ("name", *DEFAULTS)
SCHEDULE_COLUMNS = ("cron_expression", "timezone", "run_at")
TARGET_COLUMNS = (
    "target_kind", "webhook_url", "webhook_method", "webhook_headers", "signing_secret",
    "task_name", "task_queue",
)
_NAME_CONSTRAINT = "uq_triggers_tenant_id_project_id_name"


def new_signing_secret() -> str:
    """Return a fresh Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def complete_definition(values: Mapping[str, Any]) -> dict[str, Any]:
    """Fill a definition's missing columns with their defaults and check it as a whole.

    Returns:
        Every column of :data:`EDITABLE`; the target columns of the other kind cleared.

    Raises:
        InvalidTrigger: no schedule or two, a naive ``run_at`` or one past
            :data:`RUN_AT_LIMIT`, a bad zone or expression, a backoff cap below its base,
            or an incomplete target.
    """
    unknown = set(values) - set(EDITABLE)
    assert not unknown, f"not trigger columns: {sorted(unknown)}"
    row = {**DEFAULTS, **values}
    if (row["cron_expression"] is None) == (row["run_at"] is None):
        raise InvalidTrigger("cron_expression", "give exactly one of cron_expression or run_at")
    try:
        scheduling.validate_timezone(row["timezone"])
    except InvalidSchedule as exc:
        raise InvalidTrigger("timezone", exc.message) from None
    if row["cron_expression"] is not None:
        try:
            scheduling.validate_schedule(row["cron_expression"], row["timezone"])
        except InvalidSchedule as exc:
            raise InvalidTrigger("cron_expression", exc.message) from None
    elif row["run_at"].tzinfo is None:
        raise InvalidTrigger("run_at", "must carry a UTC offset")
    else:
        row["run_at"] = row["run_at"].astimezone(dt.UTC)
        if row["run_at"] >= RUN_AT_LIMIT:
            raise InvalidTrigger("run_at", f"must be before {RUN_AT_LIMIT.date().isoformat()}")
    if row["backoff_cap_s"] < row["backoff_base_s"]:
        raise InvalidTrigger("backoff_cap_s", "must be at least backoff_base_s")
    row["target_kind"] = TargetKind(row["target_kind"])
    if row["target_kind"] is TargetKind.WEBHOOK:
        if not row["webhook_url"]:
            raise InvalidTrigger("target", "a webhook target needs a url")
        row.update(task_name=None, task_queue=None)
    else:
        if not row["task_name"]:
            raise InvalidTrigger("target", "a task target needs a task_name")
        row.update(webhook_url=None, webhook_method="POST", webhook_headers={},
                   signing_secret=None)
    return row


def is_finished_one_time(trigger: Trigger) -> bool:
    """Return whether ``trigger`` is a one-time trigger whose occurrence was dispatched.

    The dispatcher leaves such a trigger disabled, without ``next_run_at``, and with
    ``last_scheduled_for`` at its ``run_at``.
    """
    return (
        trigger.run_at is not None
        and not trigger.enabled
        and trigger.next_run_at is None
        and trigger.last_scheduled_for == trigger.run_at
    )


def next_run_after_save(
    old: Trigger | None,
    new: Mapping[str, Any],
    now: dt.datetime,
    cache: dict[tuple[str, str], dt.datetime] | None = None,
) -> dt.datetime | None:
    """Decide ``next_run_at`` for a trigger being saved as ``new`` (``old``: as stored).

    Disabled: NULL. Created, re-enabled or rescheduled: the first occurrence after
    ``now`` (one-time: ``run_at``, which must then lie ahead). Otherwise unchanged, so an
    edit of the description neither skips nor repeats an occurrence.

    ``cache`` maps (expression, zone) to a computed time, for callers saving many.

    Raises:
        InvalidTrigger: ``run_at`` is not in the future, or the expression never fires
            in its zone.
    """
    if not new["enabled"]:
        return None
    if (
        old is not None
        and old.enabled
        and old.next_run_at is not None
        and all(getattr(old, column) == new[column] for column in SCHEDULE_COLUMNS)
    ):
        return old.next_run_at
    if new["cron_expression"] is None:
        if new["run_at"] <= now:
            raise InvalidTrigger("run_at", "must be in the future")
        return new["run_at"]
    key = (new["cron_expression"], new["timezone"])
    if cache is not None and key in cache:
        return cache[key]
    try:
        found = scheduling.next_run_at(key[0], key[1], now)
    except InvalidSchedule as exc:
        raise InvalidTrigger("cron_expression", exc.message) from None
    if cache is not None:
        cache[key] = found
    return found


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


@dataclasses.dataclass(frozen=True)
class Applied:
    """What saving a definition over a stored trigger (or none) comes to; nothing written."""

    #: The complete definition to store (every editable column).
    row: dict[str, Any]
    #: False when it equals what is stored: nothing is written (no version bump).
    changed: bool
    #: The trigger's scheduled runs must stop (it is being disabled).
    stop_runs: bool
    next_run_at: dt.datetime | None
    #: Due occurrences the save takes away, to record as missed.
    missed: list[dict[str, Any]]
    #: A signing secret generated for a webhook that had none (shown once), or None.
    generated_secret: str | None


def apply_definition(
    old: Trigger | None, definition: Mapping[str, Any], *, now: dt.datetime,
    explicit_enabled: bool | None, declarative: bool, generate_secret: bool = True,
    cache: dict[tuple[str, str], dt.datetime] | None = None,
) -> Applied:
    """Decide what saving ``definition`` over ``old`` does: the one rule of PATCH and sync.

    * A webhook without a signing secret keeps the stored one, or gets a fresh one
      (when ``generate_secret``; a dry run does not).
    * Disabling stops the trigger's scheduled runs when it was enabled, or when the
      caller said ``enabled: false`` itself (a fired one-time trigger is disabled
      already, and its retries must stop too).
    * A fired one-time trigger saved with its ``run_at`` unchanged stays finished when
      the save is ``declarative`` (a sync re-applying its file); an explicit resume
      (PATCH) is checked like any other run_at, which lies in the past.
    * ``next_run_at`` follows :func:`next_run_after_save`; due occurrences the save moves
      away are returned as missed rows (:func:`app.schedule.occurrences.missed_rows`).

    Raises:
        InvalidTrigger: the definition is invalid.
    """
    row = complete_definition(definition)
    generated = None
    if row["target_kind"] is TargetKind.WEBHOOK and row["signing_secret"] is None:
        if old is not None and old.target_kind is TargetKind.WEBHOOK and old.signing_secret:
            row["signing_secret"] = old.signing_secret
        elif generate_secret:
            generated = row["signing_secret"] = new_signing_secret()
    if (old is not None and declarative and is_finished_one_time(old)
            and row["run_at"] == old.run_at):
        # The same file applied again after its one-time trigger fired: that occurrence
        # is done, and the definition's `enabled` (true by default) must not try to arm
        # a run_at now in the past. A changed run_at is a new occurrence.
        row["enabled"] = False
    stop_runs = old is not None and not row["enabled"] and (
        old.enabled or explicit_enabled is False)
    if old is not None and all(getattr(old, column) == row[column] for column in EDITABLE):
        return Applied(row, False, stop_runs, old.next_run_at, [], None)
    next_run_at = next_run_after_save(old, row, now, cache)
    missed: list[dict[str, Any]] = []
    if old is not None:
        reason = (occurrences.RESCHEDULED_REASON if row["enabled"]
                  else occurrences.DISABLED_REASON)
        missed = occurrences.missed_rows(old, next_run_at, now=now, reason=reason)
    return Applied(row, True, stop_runs, next_run_at, missed, generated)


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
    row = complete_definition(values)
    if row["target_kind"] is TargetKind.WEBHOOK and row["signing_secret"] is None:
        row["signing_secret"] = new_signing_secret()
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
) -> tuple[Trigger, str | None]:
    """Apply a partial update, bump ``version`` and ``updated_at``; a no-op writes nothing.

    Giving ``cron_expression`` clears ``run_at`` and the other way round; giving
    ``target_kind`` replaces the whole target (a webhook keeps its secret unless a new one
    is given). ``enabled: false`` stops the trigger's scheduled invocations
    (:func:`app.queries.cancellation.stop_scheduled_runs`) even when the trigger is disabled
    already: a one-time trigger that fired is, and its retries must stop too. An edit
    that moves the ``next_run_at`` of a due trigger records what it takes away as missed.

    Returns:
        The trigger, and the signing secret generated for it if the target became a
        webhook without one (to show once), else None.

    Raises:
        NotFound: no such trigger in this tenant's project.
        StaleVersion: ``expected_version`` is given and is not the stored version.
        InvalidTrigger, NameTaken: as :func:`create_trigger`.
    """
    # The row lock makes the version check and the write one atomic step: two writers
    # holding the same ETag cannot both pass it.
    trigger = get_trigger(session, tenant_id, project_id, trigger_id, for_update=True)
    if expected_version is not None and trigger.version != expected_version:
        raise StaleVersion(f"the trigger is at version {trigger.version}")
    merged = {column: getattr(trigger, column) for column in EDITABLE}
    if "target_kind" in changes:
        old_secret = trigger.signing_secret if trigger.target_kind is TargetKind.WEBHOOK else None
        merged.update({column: DEFAULTS[column] for column in TARGET_COLUMNS})
        merged["signing_secret"] = old_secret
    merged.update(changes)
    if changes.get("cron_expression") is not None and "run_at" not in changes:
        merged["run_at"] = None
    if changes.get("run_at") is not None and "cron_expression" not in changes:
        merged["cron_expression"] = None
    applied = apply_definition(trigger, merged, now=now,
                               explicit_enabled=changes.get("enabled"), declarative=False)
    if applied.stop_runs:
        stop_scheduled_runs(session, tenant_id, [trigger.id], now=now)
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


def delete_trigger(
    session: Session, tenant_id: str, project_id: str, trigger_id: uuid.UUID, *,
    now: dt.datetime, expected_version: int | None = None,
) -> None:
    """Delete a trigger after cancelling its pending invocations (its history stays).

    A due occurrence not recorded yet is recorded missed (see
    :func:`app.schedule.occurrences.missed_rows`).

    Raises:
        NotFound: no such trigger in this tenant's project.
        StaleVersion: ``expected_version`` is given and is not the stored version.
    """
    trigger = get_trigger(session, tenant_id, project_id, trigger_id, for_update=True)
    if expected_version is not None and trigger.version != expected_version:
        raise StaleVersion(f"the trigger is at version {trigger.version}")
    cancel_pending(session, tenant_id, [trigger.id], now=now, reason=DELETED_REASON)
    record_missed(session, occurrences.missed_rows(
        trigger, None, now=now, reason=occurrences.DELETED_REASON))
    session.delete(trigger)
    session.flush()


def delete_triggers_by_ref(
    session: Session, tenant_id: str, project_id: str, ref: str, *, now: dt.datetime
) -> int:
    """Delete every trigger of the project carrying ``ref``; returns how many.

    As :func:`delete_trigger`, set-based: one statement per step, whatever the count.
    """
    # The project's lock first, then the rows in id order (app.queries), as a sync does.
    gone = queries.project_triggers_with_ref(session, tenant_id, project_id, ref)
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

