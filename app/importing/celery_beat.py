"""A celery beat schedule (``app.conf.beat_schedule``) as trigger definitions (pure).

Each entry becomes the definition the API's sync takes, or is refused with the reason;
what carries over only in part is said in its notes:

* ``crontab(...)``: a cron expression of the fields' expanded values (celery expands
  names, ranges and steps; consecutive values become ranges again), in the app's zone.
  Both day fields restricted at once is refused: celery beat runs only on days that
  match both, cron on days that match either.
* ``timedelta``, a number of seconds, or ``schedule(run_every=...)``: an interval of
  whole seconds, anchored when it is first saved (``relative`` is not kept).
* ``solar(...)``: refused.
* ``args``, ``kwargs`` and ``options.queue`` carry over; ``options.expires`` becomes
  ``misfire_grace_s`` with ``misfire_policy: skip`` (a run that cannot start within it
  is recorded missed, where beat's message would expire); other options are left out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from celery.schedules import crontab, schedule, solar

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


def _schedule_fields(value: Any, timezone: str) -> dict[str, Any]:
    if isinstance(value, solar):
        raise Refused("solar schedules are not supported")
    if isinstance(value, crontab):
        return {"cron_expression": cron_expression(value), "timezone": timezone}
    if isinstance(value, schedule):
        return {"interval_s": interval_s(value.run_every), "timezone": timezone}
    if isinstance(value, dt.timedelta):
        return {"interval_s": interval_s(value), "timezone": timezone}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"interval_s": interval_s(dt.timedelta(seconds=value)), "timezone": timezone}
    raise Refused(f"a schedule of type {type(value).__name__} is not supported")


def map_entry(entry: str, spec: Mapping[str, Any], timezone: str) -> Mapped:
    """Map one ``beat_schedule`` entry (its name and dict)."""
    try:
        name = trigger_name(entry)
        target = task_target(spec.get("task"), spec.get("args"), spec.get("kwargs"))
        notes: list[str] = []
        if name != entry:
            notes.append(f"named {name!r}")
        definition: dict[str, Any] = {
            "name": name, **_schedule_fields(spec.get("schedule"), timezone),
            "target": target, "description": f"imported from celery beat entry {entry!r}"[:2000],
        }
        options = dict(spec.get("options") or {})
        if options.get("queue") is not None:
            target["queue"] = str(options.pop("queue"))
        expires = options.pop("expires", None)
        if isinstance(expires, dt.timedelta):
            expires = expires.total_seconds()
        if isinstance(expires, int | float) and not isinstance(expires, bool):
            fields, note = expiry_fields(expires, f"expires {expires:g} s")
            definition.update(fields)
            notes.append(note)
        elif expires is not None:
            notes.append("expires (an instant) left out")
        if options:
            notes.append(f"options left out: {', '.join(sorted(options))}")
        if spec.get("relative") or getattr(spec.get("schedule"), "relative", False):
            notes.append("relative left out: the interval counts from when it is saved")
        return Mapped(entry, definition, tuple(notes))
    except Refused as exc:
        return Mapped(entry, refused=str(exc))


def map_beat_schedule(beat_schedule: Mapping[str, Mapping[str, Any]], timezone: str,
                      ) -> list[Mapped]:
    """Map every entry, in order; a name two entries come to is refused the second time."""
    return unique_names(map_entry(str(entry), spec, timezone)
                        for entry, spec in beat_schedule.items())


def app_timezone(conf: Any) -> tuple[str, str | None]:
    """The zone a celery app reads its crontabs in, and a note when it is a guess."""
    zone = conf.timezone
    if zone:
        return str(zone), None
    if conf.enable_utc:
        return "UTC", None
    return "UTC", ("the app sets no timezone and enable_utc is off (the host's local time):"
                   " its crontabs are read in UTC")
