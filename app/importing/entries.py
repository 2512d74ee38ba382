"""What every importer shares (pure): an entry's result, and the mappings of celery's
schedule values that two sources hold alike.

An importer maps each entry of its source to a :class:`Mapped`: the trigger definition
the API's sync takes, or why there is none (:class:`Refused`'s message), with notes on
what carried over only in part. Celery's ``crontab`` becomes a cron expression
(:func:`cron_expression`), an interval a whole number of seconds (:func:`interval_s`), a
message's expiry in seconds a misfire grace (:func:`expiry_fields`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterable
from typing import Any

from celery.schedules import crontab

from app.limits import INTERVAL_S, MAX_CRON_CHARS, MISFIRE_GRACE_S

_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
#: The crontab fields in cron's order, with their full range.
_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day_of_month", 1, 31),
                ("month_of_year", 1, 12), ("day_of_week", 0, 6))


@dataclasses.dataclass(frozen=True)
class Mapped:
    """One source entry: its trigger definition, or why it has none."""

    entry: str
    definition: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()
    refused: str | None = None


class Refused(Exception):
    """The entry cannot be imported; the message says why."""


def trigger_name(entry: str) -> str:
    """A trigger name for an entry's name: other characters become ``-``.

    Raises:
        Refused: nothing of the name is left.
    """
    name = _NAME_CHARS.sub("-", entry).strip("-")[:200]
    if not name:
        raise Refused("its name has none of A-Z a-z 0-9 . _ -")
    return name


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


def cron_expression(entry: crontab) -> str:
    """The cron expression of a celery ``crontab``: its fields' expanded values (celery
    expands names, ranges and steps; consecutive values become ranges again).

    Raises:
        Refused: both day fields are restricted (celery runs on days that match both,
            cron on days that match either), or the expression would be too long.
    """
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


def interval_s(every: dt.timedelta) -> int:
    """An interval in whole seconds.

    Raises:
        Refused: not whole seconds, or out of Cronbeat's range.
    """
    seconds = every.total_seconds()
    if seconds != int(seconds) or not INTERVAL_S[0] <= seconds <= INTERVAL_S[1]:
        shown = int(seconds) if seconds == int(seconds) else f"{seconds:g}"
        raise Refused(f"every {shown} s: an interval is whole seconds from"
                      f" {INTERVAL_S[0]} to {INTERVAL_S[1]}")
    return int(seconds)


def expiry_fields(expires_s: float, said: str) -> tuple[dict[str, Any], str]:
    """A message that expires ``expires_s`` seconds after its instant, as the fields that
    come closest, and the note that says so (``said``: how the source put it): a run that
    cannot start within the grace is recorded missed, where celery would drop the expired
    message."""
    grace = min(max(int(expires_s), MISFIRE_GRACE_S[0]), MISFIRE_GRACE_S[1])
    return ({"misfire_grace_s": grace, "misfire_policy": "skip"},
            f"{said}: a run that cannot start within {grace} s is recorded missed"
            " (misfire_grace_s, skip)")


def task_target(task: Any, args: Any, kwargs: Any) -> dict[str, Any]:
    """A task target calling ``task`` with ``args`` and ``kwargs`` (left out when empty).

    Raises:
        Refused: no task name, or arguments that are not JSON.
    """
    if not isinstance(task, str):
        raise Refused("it names no task")
    target: dict[str, Any] = {"kind": "task", "task_name": task}
    for what, value in (("args", list(args or ())), ("kwargs", dict(kwargs or {}))):
        try:
            value = json.loads(json.dumps(value))
        except (TypeError, ValueError):
            raise Refused(f"its {what} are not JSON") from None
        if value:
            target[what] = value
    return target


def unique_names(mapped: Iterable[Mapped]) -> list[Mapped]:
    """The entries in order; one whose trigger name an earlier entry took is refused."""
    result: list[Mapped] = []
    taken: set[str] = set()
    for one in mapped:
        if one.definition is not None:
            if one.definition["name"] in taken:
                one = Mapped(one.entry, refused=f"its name {one.definition['name']!r} is"
                             " another entry's too")
            else:
                taken.add(one.definition["name"])
        result.append(one)
    return result
