"""django-celery-beat's periodic tasks as trigger definitions (pure).

Each row of ``django_celery_beat_periodictask`` (as :mod:`app.importing.django_source`
reads it: the task's columns, and its schedule's row under ``crontab``, ``interval``,
``clocked`` or ``solar``) becomes the definition the API's sync takes, or is refused with
the reason; what carries over only in part is said in its notes. ``now`` is the import's
instant (nothing here reads the clock):

* ``CrontabSchedule``: the five fields, cron-like text, are read by celery's own
  ``crontab(...)`` (so every form celery accepts: names, ranges, steps, lists), then
  mapped as a beat_schedule's crontab (:func:`app.importing.entries.cron_expression`:
  both day fields restricted is refused), in the schedule's own ``timezone`` (as
  django-celery-beat reads it by default, ``DJANGO_CELERY_BEAT_TZ_AWARE``).
* ``IntervalSchedule``: ``every`` times its ``period`` (days to microseconds), in whole
  seconds; ``start_time`` is its anchor ``start_at`` (rounded up to a whole second; beat
  never runs before it), else it counts from when it is first saved.
* ``ClockedSchedule``: a one-time trigger, ``run_at`` at ``clocked_time`` (or at a later
  ``start_time``, which beat waits for). One whose instant is already past is refused
  ("already past"): an import never fires a late run.
* ``SolarSchedule``: refused. ``one_off`` with a crontab or an interval: refused (a
  one-time trigger is a fixed ``run_at``, a clocked schedule).
* ``enabled`` false: the trigger is created paused (``enabled: false``).
* ``expires`` (an instant): past, refused (beat runs the task no more); a one-time
  trigger's becomes its misfire grace (``skip``); a recurring one's is left out with a
  note (a trigger has no end date). ``expire_seconds``: a misfire grace of that many
  seconds (``skip``), as a beat_schedule's ``options.expires``.
* ``args`` / ``kwargs``: JSON text, a JSON array / object; anything else is refused with
  the parser's reason. ``queue`` carries over; ``exchange``, ``routing_key``,
  ``priority`` and ``headers`` are left out, noted.
* ``start_time`` of a crontab still ahead: left out, noted (it runs from its next match).
* ``description``: the task's own, else where the trigger came from.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

from celery.schedules import ParseException, crontab

from app.importing.entries import (
    Mapped,
    Refused,
    cron_expression,
    expiry_fields,
    interval_s,
    task_target,
    trigger_name,
    unique_names,
)

#: django-celery-beat's ``IntervalSchedule.period`` values.
PERIODS = ("days", "hours", "minutes", "seconds", "microseconds")
#: The options beat sends a task with that a trigger has no field for.
_LEFT_OUT = ("exchange", "routing_key", "priority")
_CRONTAB_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
_SECOND = dt.timedelta(seconds=1)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat()


def _json_text(text: str | None, what: str, kind: type) -> Any:
    if not text:
        return kind()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise Refused(f"its {what} are not JSON ({exc})") from None
    if not isinstance(value, kind):
        raise Refused(f"its {what} are not a JSON {'array' if kind is list else 'object'}")
    return value


def _ceil_second(moment: dt.datetime) -> dt.datetime:
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + _SECOND


def _crontab_fields(row: Mapping[str, Any], notes: list[str], now: dt.datetime,
                    ) -> dict[str, Any]:
    schedule = row["crontab"]
    try:
        parsed = crontab(**{field: schedule[field] for field in _CRONTAB_FIELDS})
    except (ParseException, ValueError, TypeError) as exc:
        raise Refused(f"celery cannot read its crontab: {exc}") from None
    start_time = row.get("start_time")
    if start_time is not None and start_time > now:
        notes.append(f"start_time {_iso(start_time)} left out: it runs from its next match"
                     " after the import")
    return {"cron_expression": cron_expression(parsed),
            "timezone": str(schedule.get("timezone") or "UTC")}


def _interval_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    schedule = row["interval"]
    period = schedule.get("period")
    if period not in PERIODS:
        raise Refused(f"its interval's period {period!r} is none of {', '.join(PERIODS)}")
    fields: dict[str, Any] = {
        "interval_s": interval_s(dt.timedelta(**{period: schedule["every"]})),
        "timezone": "UTC"}
    if row.get("start_time") is not None:
        fields["start_at"] = _iso(_ceil_second(row["start_time"]))
    return fields


def _clocked_fields(row: Mapping[str, Any], notes: list[str], now: dt.datetime,
                    ) -> dict[str, Any]:
    run_at = row["clocked"]["clocked_time"]
    start_time = row.get("start_time")
    if start_time is not None and start_time > run_at:
        run_at = start_time
        notes.append(f"runs at its start_time {_iso(start_time)}, after its clocked time")
    if run_at <= now:
        raise Refused(f"its clocked time {_iso(run_at)} is already past (a one-time"
                      " trigger must lie ahead; nothing fires late)")
    return {"run_at": _iso(run_at), "timezone": "UTC"}


def _schedule_fields(row: Mapping[str, Any], notes: list[str], now: dt.datetime,
                     ) -> dict[str, Any]:
    kinds = [kind for kind in ("crontab", "interval", "clocked", "solar")
             if row.get(kind) is not None]
    if not kinds:
        raise Refused("it has no schedule")
    if len(kinds) > 1:
        raise Refused(f"it has more than one schedule ({', '.join(kinds)})")
    kind = kinds[0]
    if kind == "solar":
        raise Refused("solar schedules are not supported")
    if kind == "clocked":
        return _clocked_fields(row, notes, now)
    if row.get("one_off"):
        raise Refused(f"one_off with a {kind} schedule is not supported: a one-time trigger"
                      " runs at a fixed instant (a clocked schedule)")
    if kind == "crontab":
        return _crontab_fields(row, notes, now)
    return _interval_fields(row)


def _expiry(row: Mapping[str, Any], definition: dict[str, Any], notes: list[str],
            now: dt.datetime) -> None:
    expires = row.get("expires")
    if expires is not None:
        if expires <= now:
            raise Refused(f"it expired at {_iso(expires)} (beat runs it no more)")
        run_at = definition.get("run_at")
        if run_at is None:
            notes.append(f"expires at {_iso(expires)} left out: a trigger has no end date"
                         " (pause or delete it then)")
            return
        seconds = (expires - dt.datetime.fromisoformat(run_at)).total_seconds()
        if seconds <= 0:
            raise Refused(f"it expires at {_iso(expires)}, before its clocked time (beat"
                          " would never run it)")
        fields, note = expiry_fields(seconds, f"expires at {_iso(expires)}")
    elif row.get("expire_seconds") is not None:
        fields, note = expiry_fields(row["expire_seconds"],
                                     f"expire_seconds {row['expire_seconds']}")
    else:
        return
    definition.update(fields)
    notes.append(note)


def map_periodic_task(row: Mapping[str, Any], now: dt.datetime) -> Mapped:
    """Map one periodic task's row (see the module doc)."""
    entry = str(row["name"])
    try:
        name = trigger_name(entry)
        target = task_target(row.get("task"), _json_text(row.get("args"), "args", list),
                             _json_text(row.get("kwargs"), "kwargs", dict))
        notes: list[str] = []
        if name != entry:
            notes.append(f"named {name!r}")
        if row.get("queue"):
            target["queue"] = str(row["queue"])
        description = (row.get("description")
                       or f"imported from django-celery-beat periodic task {entry!r}")
        definition: dict[str, Any] = {
            "name": name, **_schedule_fields(row, notes, now), "target": target,
            "description": description[:2000]}
        if not row.get("enabled", True):
            definition["enabled"] = False
        _expiry(row, definition, notes, now)
        left_out = [option for option in _LEFT_OUT if row.get(option) is not None]
        if (row.get("headers") or "{}").strip() != "{}":
            left_out.append("headers")
        if left_out:
            notes.append(f"options left out: {', '.join(sorted(left_out))}")
        return Mapped(entry, definition, tuple(notes))
    except Refused as exc:
        return Mapped(entry, refused=str(exc))


def map_periodic_tasks(rows: Iterable[Mapping[str, Any]], now: dt.datetime) -> list[Mapped]:
    """Map every row, in order; a name two rows come to is refused the second time."""
    return unique_names(map_periodic_task(row, now) for row in rows)
