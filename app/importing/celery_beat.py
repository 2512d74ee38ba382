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
import json
from collections.abc import Iterable, Mapping
from typing import Any

from celery.schedules import crontab, schedule, solar

from app.importing.mapping import Mapped, distinct_names, trigger_name
from app.limits import INTERVAL_S, MAX_CRON_CHARS, MISFIRE_GRACE_S

#: The crontab fields in cron's order, with their full range.
_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day_of_month", 1, 31),
                ("month_of_year", 1, 12), ("day_of_week", 0, 6))


class Refused(Exception):
    """The entry cannot be imported; the message says why."""


def cron_field(values: Iterable[int], low: int, high: int) -> str:
    """``*`` for the whole range, else the values as a list of numbers and ranges."""
    ordered = sorted(set(values))
    if ordered == list(range(low, high + 1)):
        return "*"
    parts: list[str] = []
    start = previous = ordered[0]
    for value in [*ordered[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if value is not None:
            start = previous = value
    return ",".join(parts)


def _cron(entry: crontab) -> str:
    fields = {name: cron_field(getattr(entry, name), low, high)
              for name, low, high in _CRON_FIELDS}
    if fields["day_of_month"] != "*" and fields["day_of_week"] != "*":
        raise Refused("day_of_month and day_of_week are both restricted: celery beat runs"
                      " on days that match both, cron on days that match either")
    expression = " ".join(fields[name] for name, _, _ in _CRON_FIELDS)
    if len(expression) > MAX_CRON_CHARS:
        raise Refused(f"its cron expression would be {len(expression)} characters (at most"
                      f" {MAX_CRON_CHARS})")
    return expression


def _interval_s(every: dt.timedelta) -> int:
    seconds = every.total_seconds()
    if seconds != int(seconds) or not INTERVAL_S[0] <= seconds <= INTERVAL_S[1]:
        raise Refused(f"every {seconds:g} s: an interval is whole seconds from"
                      f" {INTERVAL_S[0]} to {INTERVAL_S[1]}")
    return int(seconds)


def _schedule_fields(value: Any, timezone: str) -> dict[str, Any]:
    if isinstance(value, solar):
        raise Refused("solar schedules are not supported")
    if isinstance(value, crontab):
        return {"cron_expression": _cron(value), "timezone": timezone}
    if isinstance(value, schedule):
        return {"interval_s": _interval_s(value.run_every), "timezone": timezone}
    if isinstance(value, dt.timedelta):
        return {"interval_s": _interval_s(value), "timezone": timezone}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"interval_s": _interval_s(dt.timedelta(seconds=value)), "timezone": timezone}
    raise Refused(f"a schedule of type {type(value).__name__} is not supported")


def _json(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise Refused(f"its {what} are not JSON") from None


def map_entry(entry: str, spec: Mapping[str, Any], timezone: str) -> Mapped:
    """Map one ``beat_schedule`` entry (its name and dict)."""
    try:
        name = trigger_name(entry)
        if not name:
            raise Refused("its name has none of A-Z a-z 0-9 . _ -")
        if not isinstance(spec.get("task"), str):
            raise Refused("it names no task")
        notes: list[str] = []
        if name != entry:
            notes.append(f"named {name!r}")
        target: dict[str, Any] = {"kind": "task", "task_name": spec["task"]}
        args = _json(list(spec.get("args") or ()), "args")
        kwargs = _json(dict(spec.get("kwargs") or {}), "kwargs")
        if args:
            target["args"] = args
        if kwargs:
            target["kwargs"] = kwargs
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
            grace = min(max(int(expires), MISFIRE_GRACE_S[0]), MISFIRE_GRACE_S[1])
            definition.update(misfire_grace_s=grace, misfire_policy="skip")
            notes.append(f"expires {expires:g} s: a run that cannot start within {grace} s"
                         " is recorded missed (misfire_grace_s, skip)")
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
    return distinct_names((map_entry(str(entry), spec, timezone)
                           for entry, spec in beat_schedule.items()), "entry")


def app_timezone(conf: Any) -> tuple[str, str | None]:
    """The zone a celery app reads its crontabs in, and a note when it is a guess."""
    zone = conf.timezone
    if zone:
        return str(zone), None
    if conf.enable_utc:
        return "UTC", None
    return "UTC", ("the app sets no timezone and enable_utc is off (the host's local time):"
                   " its crontabs are read in UTC")
