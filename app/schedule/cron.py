"""Cron expression parser and wall-clock matcher (no time zones, no clock).

This module knows calendars, not time zones: :func:`next_match` answers "what is the
first local wall-clock minute at or after this one that the expression matches?" on naive
datetimes. :mod:`app.schedule.scheduling` maps wall times to real instants and applies
the DST rules.

The dialect is cronie / Debian cron, which is what people who write crontabs expect:

* five fields ``minute hour day-of-month month day-of-week``, or one of the macros
  ``@yearly @annually @monthly @weekly @daily @midnight @hourly``;
* ``*``, lists, ranges, steps (``*/15``, ``1-30/5``), month and weekday names, day-of-week
  ``0-7`` where both 0 and 7 are Sunday;
* the day rule of cronie (see :class:`DaySpec`).

Extensions that cronie lacks, with the meaning Quartz and cronsim give them: ``L``, ``LW``
and ``NW`` in the day-of-month field, ``D#K`` and ``DL`` in the day-of-week field, and
``N/S`` as a short form of ``N-max/S``. Cronie rejects ``N/S``, but every implementation
that accepts it (Quartz, croniter, cronsim, robfig/cron) agrees on this meaning, and
triggers written for our previous croniter-based engine may use it.
"""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass
from datetime import datetime

from app.errors import InvalidSchedule

__all__ = ["CronSpec", "DaySpec", "can_fire", "matches", "next_match", "parse"]

MAX_EXPRESSION_LENGTH = 256

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

# Every (month, month length) pair meets every weekday as its first day somewhere in the
# 400-year Gregorian cycle, so "can it fire?" is a finite, exact question (see can_fire).
_MONTH_LENGTHS: dict[int, tuple[int, ...]] = {
    month: (28, 29) if month == 2 else (calendar.monthrange(2001, month)[1],)
    for month in range(1, 13)
}


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0

    def bad(self, item: str, why: str | None = None) -> InvalidSchedule:
        """The error for ``item``, saying why (by default, what the field allows)."""
        return InvalidSchedule(f"bad {self.name} field: {item} ({why or self.allowed})")

    @property
    def allowed(self) -> str:
        text = f"{self.name} is {self.low}-{self.high}"
        if self.names:
            text += f" or {self.names[0]}-{self.names[-1]}"
        if self.name == "day-of-week":
            text += "; 0 and 7 are Sunday"
        return text


_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTH_NAMES, 1)
_DOW = _Field("day-of-week", 0, 7, _DAY_NAMES, 0)


@dataclass(frozen=True, slots=True)
class DaySpec:
    """The two day fields, which only make sense together.

    Bit ``d`` of ``dom`` is day of month ``d``; bit ``w`` of ``dow`` and ``dow_last`` is
    weekday ``w`` (0 = Sunday); ``dom_nearest`` holds the N of each ``NW``.

    The day rule is cronie's (its DOM_STAR/DOW_STAR flags): if either field *starts with*
    ``*``, a day must match both fields (``day_and``); if both are restricted, a day
    matching either field is enough. So ``0 0 13 * 5`` fires on every 13th and on every
    Friday, while ``0 0 */2 * 1`` fires only on Mondays that are odd days of the month,
    because ``*/2`` starts with ``*`` even though it restricts the days.
    """

    dom: int
    dom_last: bool
    dom_last_weekday: bool
    dom_nearest: frozenset[int]
    dow: int
    dow_nth: frozenset[tuple[int, int]]
    dow_last: int
    day_and: bool


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A parsed expression; the tuples map a value to the next allowed value, -1 for none.

    ``fixed_time`` follows cronie: a job is "fixed time" unless its minute or hour field
    starts with ``*``. Only that prefix counts, so ``0 0-23 * * *`` is fixed time too.
    """

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    days: DaySpec
    fixed_time: bool


def _next_table(values: set[int], high: int) -> tuple[int, ...]:
    table = [-1] * (high + 2)
    following = -1
    for value in range(high, -1, -1):
        if value in values:
            following = value
        table[value] = following
    return tuple(table)


def _number(text: str, field: _Field, item: str) -> int:
    if field.names and text in field.names:
        return field.names.index(text) + field.name_base
    # isdigit() alone would accept other scripts' digits, which no cron understands.
    if not (text.isascii() and text.isdigit() and len(text) <= 4):
        raise field.bad(item)
    value = int(text)
    if not field.low <= value <= field.high:
        raise field.bad(item)
    return value


def _items(text: str, field: _Field) -> list[str]:
    items = text.split(",")
    if "" in items:
        raise field.bad(text, "an empty item in a list")
    return items


def _values(item: str, field: _Field) -> set[int]:
    """Expand ``*``, ``N``, ``A-B``, each optionally with ``/S``."""
    upper = item.upper()
    base, slash, step_text = upper.partition("/")
    step = 1
    if slash:
        if not (step_text.isascii() and step_text.isdigit() and len(step_text) <= 4):
            raise field.bad(item, "a step is a whole number of at least 1")
        step = int(step_text)
        if step < 1:
            raise field.bad(item, "a step is a whole number of at least 1")
    if base == "*":
        low, high = field.low, field.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _number(first, field, item), _number(last, field, item)
        if low > high:
            # Wrap-around ranges (FRI-MON, 22-2) mean different things in different
            # crons; cronie rejects them, and so do we.
            raise field.bad(item, "descending range; for a wrap-around, list both parts")
    else:
        low = _number(base, field, item)
        high = field.high if slash else low
    return set(range(low, high + 1, step))


def _field_values(text: str, field: _Field) -> set[int]:
    result: set[int] = set()
    for item in _items(text, field):
        result |= _values(item, field)
    return result


def _parse_dom(text: str) -> tuple[int, bool, bool, frozenset[int]]:
    days: set[int] = set()
    last = last_weekday = False
    nearest: set[int] = set()
    items = _items(text, _DOM)
    for item in items:
        upper = item.upper()
        if upper == "L":
            last = True
        elif upper == "LW":
            last_weekday = True
        elif upper.endswith("W") and len(upper) > 1:
            if len(items) > 1:
                # As in Quartz: NW names one day, alone in its field.
                raise _DOM.bad(text, "NW stands alone in the day-of-month field")
            nearest.add(_number(upper[:-1], _DOM, item))
        else:
            days |= _values(item, _DOM)
    return sum(1 << d for d in days), last, last_weekday, frozenset(nearest)


def _parse_dow(text: str) -> tuple[int, frozenset[tuple[int, int]], int]:
    weekdays: set[int] = set()
    nth: set[tuple[int, int]] = set()
    last: set[int] = set()
    for item in _items(text, _DOW):
        upper = item.upper()
        if "#" in upper:
            day_text, _, k_text = upper.partition("#")
            day = _number(day_text, _DOW, item) % 7
            if k_text not in {"1", "2", "3", "4", "5"}:
                raise _DOW.bad(item, "the K of D#K is 1-5")
            nth.add((day, int(k_text)))
        elif upper.endswith("L") and len(upper) > 1:
            if not upper[:-1].isdigit():
                raise _DOW.bad(item, "the D of DL is a number 0-7")
            last.add(_number(upper[:-1], _DOW, item) % 7)
        else:
            weekdays |= {value % 7 for value in _values(item, _DOW)}
    return sum(1 << d for d in weekdays), frozenset(nth), sum(1 << d for d in last)


@functools.lru_cache(maxsize=4096)
def parse(expression: str) -> CronSpec:
    """Parse and validate a cron expression (cached: the dispatcher re-parses constantly).

    Returns:
        The parsed expression.

    Raises:
        InvalidSchedule: the expression is not a string, its syntax is wrong, a value
            is out of range, or it can never fire (such as ``0 0 30 2 *``).
    """
    spec = _compile(expression)
    if not can_fire(spec):
        raise InvalidSchedule(f"never fires: {spec.text}")
    return spec


def _compile(expression: str) -> CronSpec:
    if not isinstance(expression, str):
        raise InvalidSchedule("cron expression must be a string")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise InvalidSchedule(f"expression too long (max {MAX_EXPRESSION_LENGTH} characters)")
    # Fields are separated by ASCII spaces and tabs, as cronie reads them: any other
    # whitespace (a no-break space, U+2028, ...) is part of a field, and refused there.
    text = " ".join(part for part in expression.replace("\t", " ").split(" ") if part)
    fields = text.split(" ") if text else []
    if text.startswith("@"):
        if text.lower() == "@reboot":
            raise InvalidSchedule("unsupported macro: @reboot")
        if text.lower() not in MACROS:
            raise InvalidSchedule(f"unknown macro: {text}")
        fields = MACROS[text.lower()].split(" ")
    if len(fields) != 5:
        raise InvalidSchedule(f"expected 5 fields, got {len(fields)}")
    minute, hour, dom, month, dow = fields
    return CronSpec(
        text=text,
        minutes=_next_table(_field_values(minute, _MINUTE), 59),
        hours=_next_table(_field_values(hour, _HOUR), 23),
        months=_next_table(_field_values(month, _MONTH), 12),
        days=DaySpec(
            *_parse_dom(dom),
            *_parse_dow(dow),
            day_and=dom.startswith("*") or dow.startswith("*"),
        ),
        fixed_time=not (minute.startswith("*") or hour.startswith("*")),
    )


def _nearest_weekday(day: int, first_dow: int, month_days: int) -> int:
    # Quartz's NW: the weekday closest to day N without leaving the month, so 1W on a
    # Saturday is Monday the 3rd and 31W on a Sunday is Friday the 29th.
    weekday = (first_dow + day - 1) % 7
    if weekday == 6:
        return day - 1 if day > 1 else day + 2
    if weekday == 0:
        return day + 1 if day < month_days else day - 2
    return day


@functools.lru_cache(maxsize=8192)
def _day_table(days: DaySpec, first_dow: int, month_days: int) -> tuple[int, ...]:
    """Next matching day of month (-1 for none) for a month of this shape.

    A month's matching days depend only on its length and the weekday of its 1st, so
    there are just 28 shapes per expression, whatever the year.
    """
    in_month = (1 << (month_days + 1)) - 2
    dom = days.dom & in_month
    if days.dom_last:
        dom |= 1 << month_days
    if days.dom_last_weekday:
        dom |= 1 << _nearest_weekday(month_days, first_dow, month_days)
    for day in days.dom_nearest:
        if day <= month_days:  # 31W means nothing in a 30-day month, as in Quartz
            dom |= 1 << _nearest_weekday(day, first_dow, month_days)
    dow = 0
    for day in range(1, month_days + 1):
        weekday = (first_dow + day - 1) % 7
        if (
            days.dow >> weekday & 1
            or (weekday, (day + 6) // 7) in days.dow_nth
            or (days.dow_last >> weekday & 1 and day + 7 > month_days)
        ):
            dow |= 1 << day
    matching = dom & dow if days.day_and else dom | dow
    return _next_table({d for d in range(1, 32) if matching >> d & 1}, 31)


@functools.lru_cache(maxsize=4096)
def _month_shape(year: int, month: int) -> tuple[int, int]:
    first_weekday, month_days = calendar.monthrange(year, month)
    return (first_weekday + 1) % 7, month_days  # Python counts from Monday, cron from Sunday


def can_fire(spec: CronSpec) -> bool:
    """Tell whether the expression matches any date at all, decided without searching.

    Returns:
        False for expressions such as ``0 0 30 2 *`` or ``0 0 31 4 *`` that can never fire.
    """
    return any(
        _day_table(spec.days, first_dow, month_days)[1] != -1
        for month in range(1, 13)
        if spec.months[month] == month
        for month_days in _MONTH_LENGTHS[month]
        for first_dow in range(7)
    )


def matches(spec: CronSpec, wall: datetime) -> bool:
    """Tell whether a wall-clock minute matches (seconds and tzinfo are ignored).

    Returns:
        True if every field matches ``wall``.
    """
    return (
        spec.minutes[wall.minute] == wall.minute
        and spec.hours[wall.hour] == wall.hour
        and spec.months[wall.month] == wall.month
        and _day_table(spec.days, *_month_shape(wall.year, wall.month))[wall.day] == wall.day
    )


def next_match(spec: CronSpec, start: datetime, last_year: int) -> datetime | None:
    """Find the first matching wall-clock minute at or after ``start`` (naive, whole minute).

    Jumps field by field (month, day, hour, minute) instead of testing every minute, so a
    call costs a few table look-ups even for yearly expressions.

    Returns:
        The match, or None if there is none up to the end of ``last_year``.
    """
    year, month, day, hour, minute = start.year, start.month, start.day, start.hour, start.minute
    while year <= last_year:
        found = spec.months[month]
        if found == -1:
            year, month, day, hour, minute = year + 1, 1, 1, 0, 0
            continue
        if found != month:
            month, day, hour, minute = found, 1, 0, 0
        found = _day_table(spec.days, *_month_shape(year, month))[day]
        if found == -1:
            month, day, hour, minute = month + 1, 1, 0, 0
            continue
        if found != day:
            day, hour, minute = found, 0, 0
        found = spec.hours[hour]
        if found == -1:
            day, hour, minute = day + 1, 0, 0
            continue
        if found != hour:
            hour, minute = found, 0
        found = spec.minutes[minute]
        if found == -1:
            hour, minute = hour + 1, 0
            continue
        return datetime(year, month, day, hour, found)
    return None
