"""A trigger's definition: its defaults, its checks, and what saving it comes to (pure).

:func:`apply_definition` is the one save rule that a PATCH and a sync both follow;
``next_run_at`` is decided here (:func:`next_run_after_save`): saving never fires a run
by itself, and re-enabling never fires a burst of the occurrences missed while the
trigger was off, because the next one is counted from now.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from app.enums import MisfirePolicy, OverlapPolicy, TargetKind
from app.errors import InvalidSchedule, InvalidTrigger
from app.limits import INTERVAL_S, RUN_AT_LIMIT
from app.models import Trigger
from app.schedule import occurrences, scheduling
from app.schedule.kinds import Schedule, schedule_of
from app.targets import all_columns, target_of

# What a trigger gets for every column its definition leaves out. Kept here rather than
# read back from the server defaults so that a declarative sync can tell "unchanged"
# from "changed" without a round trip.
DEFAULTS: dict[str, Any] = {
    "description": "",
    "enabled": True,
    "cron_expression": None,
    "timezone": "UTC",
    "run_at": None,
    "interval_s": None,
    "start_at": None,
    "target_kind": TargetKind.WEBHOOK,
    "webhook_url": None,
    "webhook_method": "POST",
    "webhook_headers": {},
    "signing_secret": None,
    "task_name": None,
    "task_queue": None,
    "task_args": None,
    "task_kwargs": None,
    # None: decided at save (app.targets.task.Task.prepare_save).
    "task_envelope": None,
    "task_outcome": False,
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
    # Set by cronbeat sync only (the API's schemas have no such field): see app.editing.managed.
    "managed_by": None,
}
#: The columns a definition may set.
EDITABLE = ("name", *DEFAULTS)
SCHEDULE_COLUMNS = ("cron_expression", "timezone", "run_at", "interval_s", "start_at")
#: Each schedule kind's columns, by the column that names the kind: giving one kind in an
#: update clears the others'.
KIND_COLUMNS = {
    "cron_expression": ("cron_expression",),
    "run_at": ("run_at",),
    "interval_s": ("interval_s", "start_at"),
}
ONE_KIND = "give exactly one of cron_expression, run_at or interval_s"


def anchored(values: Mapping[str, Any], old: Trigger | None, now: dt.datetime,
             ) -> dict[str, Any]:
    """``values`` with an interval's missing ``start_at`` filled in: the stored anchor
    when ``old`` has one (a sync that leaves it out does not move it), else ``now``
    to the whole second (an interval starts when it is first saved)."""
    row = dict(values)
    if row.get("interval_s") is not None and row.get("start_at") is None:
        row["start_at"] = (old.start_at if old is not None and old.start_at is not None
                           else now.replace(microsecond=0))
    return row
TARGET_COLUMNS = ("target_kind", *all_columns())


def complete_definition(values: Mapping[str, Any]) -> dict[str, Any]:
    """Fill a definition's missing columns with their defaults and check it as a whole.

    Returns:
        Every column of :data:`EDITABLE`; the target columns of the other kind cleared.

    Raises:
        InvalidTrigger: no schedule or two, a naive ``run_at`` or one past
            :data:`RUN_AT_LIMIT`, an interval out of range or without a whole-second
            anchor (:func:`anchored` gives the default one), a bad zone or expression,
            a backoff cap below its base, or an incomplete target.
    """
    unknown = set(values) - set(EDITABLE)
    assert not unknown, f"not trigger columns: {sorted(unknown)}"
    row = {**DEFAULTS, **values}
    given = [column for column in KIND_COLUMNS if row[column] is not None]
    if len(given) != 1:
        raise InvalidTrigger((given or ["cron_expression"])[-1], ONE_KIND)
    if row["start_at"] is not None and row["interval_s"] is None:
        raise InvalidTrigger("start_at", "is the anchor of an interval_s schedule only")
    try:
        scheduling.validate_timezone(row["timezone"])
    except InvalidSchedule as exc:
        raise InvalidTrigger("timezone", exc.message) from None
    if row["cron_expression"] is not None:
        try:
            scheduling.validate_schedule(row["cron_expression"], row["timezone"])
        except InvalidSchedule as exc:
            raise InvalidTrigger("cron_expression", exc.message) from None
    elif row["interval_s"] is not None:
        _check_interval(row)
    elif row["run_at"].tzinfo is None:
        raise InvalidTrigger("run_at", "must carry a UTC offset")
    else:
        row["run_at"] = row["run_at"].astimezone(dt.UTC)
        if row["run_at"] >= RUN_AT_LIMIT:
            raise InvalidTrigger("run_at", f"must be before {RUN_AT_LIMIT.date().isoformat()}")
    if row["backoff_cap_s"] < row["backoff_base_s"]:
        raise InvalidTrigger("backoff_cap_s", "must be at least backoff_base_s")
    row["target_kind"] = TargetKind(row["target_kind"])
    target = target_of(row["target_kind"])
    target.check(row)
    row.update({column: value for column, value in all_columns().items()
                if column not in target.columns})
    return row


def _check_interval(row: dict[str, Any]) -> None:
    low, high = INTERVAL_S
    interval_s = row["interval_s"]
    if isinstance(interval_s, bool) or not isinstance(interval_s, int):
        raise InvalidTrigger("interval_s", "must be a whole number of seconds")
    if not low <= interval_s <= high:
        raise InvalidTrigger("interval_s", f"must be between {low} and {high} seconds")
    start_at = row["start_at"]
    if start_at is None or start_at.tzinfo is None:
        raise InvalidTrigger("start_at", "must carry a UTC offset")
    row["start_at"] = start_at = start_at.astimezone(dt.UTC)
    if start_at.microsecond:
        raise InvalidTrigger("start_at", "must be a whole second")
    if start_at >= RUN_AT_LIMIT:
        raise InvalidTrigger("start_at", f"must be before {RUN_AT_LIMIT.date().isoformat()}")


def is_finished_one_time(trigger: Trigger) -> bool:
    """Return whether ``trigger`` is a one-time trigger whose occurrence was dispatched.

    The dispatcher leaves such a trigger disabled, without ``next_run_at``, and with
    ``last_scheduled_for`` at its ``run_at``.
    """
    return (
        not schedule_of(trigger).pausable
        and not trigger.enabled
        and trigger.next_run_at is None
        and trigger.last_scheduled_for == trigger.run_at
    )


def is_taken_ahead_one_time(trigger: Trigger, now: dt.datetime) -> bool:
    """Whether ``trigger`` is a one-time trigger that the dispatcher took ahead of its
    instant (second precision, app.firing.dispatch): fired, but its run still to come."""
    return (is_finished_one_time(trigger) and trigger.run_at is not None
            and trigger.run_at > now)


def next_run_after_save(
    old: Trigger | None,
    new: Mapping[str, Any],
    now: dt.datetime,
    cache: dict[Schedule, dt.datetime] | None = None,
) -> dt.datetime | None:
    """Decide ``next_run_at`` for a trigger being saved as ``new`` (``old``: as stored).

    Disabled: NULL. Created, re-enabled or rescheduled: the first occurrence after
    ``now`` (one-time: ``run_at``, which must then lie ahead). Otherwise unchanged, so an
    edit of the description neither skips nor repeats an occurrence.

    ``cache`` maps a schedule to its computed time, for callers saving many.

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
    schedule = schedule_of(new)
    if cache is not None and schedule in cache:
        return cache[schedule]
    try:
        found = schedule.first_for_save(now)
    except InvalidSchedule as exc:
        raise InvalidTrigger(schedule.field, exc.message) from None
    if cache is not None:
        cache[schedule] = found
    return found


@dataclasses.dataclass(frozen=True)
class Applied:
    """What saving a definition over a stored trigger (or none) comes to; nothing written."""

    #: The complete definition to store (every editable column).
    row: dict[str, Any]
    #: False when it equals what is stored: nothing is written (no version bump).
    changed: bool
    #: The trigger's scheduled runs must stop (it is being disabled).
    stop_runs: bool
    #: Its schedule changed: runs of the old schedule taken ahead of their instant (a
    #: held kind's, app.firing.dispatch) must not run.
    rescheduled: bool
    next_run_at: dt.datetime | None
    #: Due occurrences the save takes away, to record as missed.
    missed: list[dict[str, Any]]
    #: A signing secret generated for a webhook that had none (shown once), or None.
    generated_secret: str | None


def apply_definition(
    old: Trigger | None, definition: Mapping[str, Any], *, now: dt.datetime,
    explicit_enabled: bool | None, declarative: bool, generate_secret: bool = True,
    cache: dict[Schedule, dt.datetime] | None = None,
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
      away are returned as missed rows (:func:`app.schedule.occurrences.missed_rows`),
      and a changed schedule says so (``rescheduled``: its runs taken ahead are
      cancelled by the caller).

    Raises:
        InvalidTrigger: the definition is invalid.
    """
    row = complete_definition(anchored(definition, old, now))
    generated = target_of(row["target_kind"]).prepare_save(
        row, old, generate_secret=generate_secret)
    if (old is not None and declarative and is_finished_one_time(old)
            and row["run_at"] == old.run_at):
        # The same file applied again after its one-time trigger fired: that occurrence
        # is done, and the definition's `enabled` (true by default) must not try to arm
        # a run_at now in the past. A changed run_at is a new occurrence.
        row["enabled"] = False
    stop_runs = old is not None and not row["enabled"] and (
        old.enabled or explicit_enabled is False)
    rescheduled = old is not None and any(
        getattr(old, column) != row[column] for column in SCHEDULE_COLUMNS)
    if (rescheduled and explicit_enabled is None and old is not None
            and is_taken_ahead_one_time(old, now)):
        # Taken ahead of its instant, so disabled as fired, though it has not run: the
        # new schedule is armed as that of a trigger not yet fired would be (its held
        # run is cancelled by the caller).
        row["enabled"] = True
    if old is not None and all(getattr(old, column) == row[column] for column in EDITABLE):
        return Applied(row, False, stop_runs, False, old.next_run_at, [], None)
    next_run_at = next_run_after_save(old, row, now, cache)
    missed: list[dict[str, Any]] = []
    if old is not None:
        reason = (occurrences.RESCHEDULED_REASON if row["enabled"]
                  else occurrences.DISABLED_REASON)
        missed = occurrences.missed_rows(old, next_run_at, now=now, reason=reason)
    return Applied(row, True, stop_runs, rescheduled, next_run_at, missed, generated)
