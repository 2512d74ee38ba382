"""The pure scheduling core: when does a trigger fire next?

Nothing here touches a database, Celery or the clock: the reference time is always an
argument, and the same arguments always give the same answer.

An expression is evaluated against the local wall clock of the trigger's time zone (see
:mod:`app.schedule.cron` for the dialect) and every result is converted straight back to an aware
UTC datetime on a whole minute. Daylight-saving transitions follow cronie's split between
two kinds of jobs:

* **Fixed-time** jobs (neither the minute nor the hour field starts with ``*``, such as
  ``30 2 * * *``, ``0 9 * * 1-5`` or ``@daily``) run once per matching local day. A wall
  time inside a spring-forward gap fires once, at the transition instant (02:30 on a
  02:00->03:00 night fires at 03:00 local); a wall time repeated at fall-back fires only
  at its first occurrence.
* **Interval** jobs (everything else, such as ``*/15 * * * *``, ``@hourly`` or
  ``5 */2 * * *``) fire at every real instant whose local wall clock matches: wall times
  inside a gap are skipped, repeated wall times fire in both passes.

Time zones come from the pinned ``tzdata`` package, never from the host's
``/usr/share/zoneinfo``, so every worker computes the same schedule whatever its image
ships, and host-only names such as ``localtime`` or ``posix/Europe/Paris`` are rejected.
Nothing global (``zoneinfo.TZPATH``) is changed to achieve this: zones are loaded with
``ZoneInfo.from_file`` from the package's files and cached here.
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
from datetime import MAXYEAR, UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from app.errors import InvalidSchedule
from app.schedule import cron

__all__ = [
    "MAX_PREVIEW",
    "InvalidSchedule",
    "is_fixed_time",
    "next_run_at",
    "next_run_times",
    "validate_schedule",
    "validate_timezone",
]

MAX_PREVIEW = 1000

# Any expression that passes validation matches some date within every 400-year window
# (the Gregorian calendar repeats exactly every 400 years), and in practice within about
# 40 (``0 0 * 2 1#5``, a Monday Feb 29, is the sparsest). The bound only ends the search
# for a schedule whose every match falls into DST gaps, such as ``* 2 * 3 0#2`` in
# America/New_York, where US clocks always skip 02:00-03:00 on the second Sunday of March.
SEARCH_YEARS = 400

_ONE_MINUTE = timedelta(minutes=1)
_ONE_SECOND = timedelta(seconds=1)
_ZERO = timedelta(0)


@functools.cache
def _zone_names() -> frozenset[str]:
    text = importlib.resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    # "Factory" is tzdata's placeholder for "no zone configured" (its abbreviation is
    # "-00"); it is in the database but is never a place a user means.
    return frozenset(text.split()) - {"Factory"}


def zone_names() -> tuple[str, ...]:
    """Every zone name a trigger may use, sorted (the OpenAPI document lists them)."""
    return tuple(sorted(_zone_names()))


@functools.cache
def _load_zone(name: str) -> ZoneInfo:
    resource = importlib.resources.files("tzdata.zoneinfo").joinpath(*name.split("/"))
    with resource.open("rb") as data:
        return ZoneInfo.from_file(data, key=name)


def _shown(text: str) -> str:
    # Echo user input in messages only when it cannot hide or forge anything.
    shortened = text[:64]
    if shortened and shortened.isprintable() and shortened.strip() == shortened:
        return shortened
    return repr(shortened)


def validate_timezone(name: str) -> ZoneInfo:
    """Load an IANA time zone from the pinned tzdata package.

    The returned object comes from ``ZoneInfo.from_file``, so it cannot be pickled: pass
    zone *names* between processes and call this function again on the other side.

    Returns:
        The zone (the same object for the same name).

    Raises:
        InvalidSchedule: ``name`` is not a zone of the IANA database, e.g.
            ``unknown time zone: Mars/Olympus``, or it is not a string.
    """
    if not isinstance(name, str):
        raise InvalidSchedule("time zone must be a string")
    # The allow-list check also keeps paths such as "../etc/passwd" away from the loader.
    if name not in _zone_names():
        raise InvalidSchedule(f"unknown time zone: {_shown(name)}{_did_you_mean(name)}")
    return _load_zone(name)


def _did_you_mean(name: str) -> str:
    """``; did you mean X?`` for the closest zone names (a different case, a typo), or
    nothing when none is close."""
    if len(name) > 64:  # no zone name is longer; and difflib's work grows with it
        return ""
    names = _zone_names()
    folded = [zone for zone in names if zone.lower() == name.strip().lower()]
    close = folded or difflib.get_close_matches(name.strip(), sorted(names), n=3, cutoff=0.8)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def validate_schedule(cron_expression: str, timezone: str) -> None:
    """Check that a trigger's expression and time zone are usable.

    Expressions that can never fire (``0 0 30 2 *``) are rejected. An expression whose
    every match falls into a DST gap of its zone passes; ``next_run_at`` reports it.

    Raises:
        InvalidSchedule: with a short message naming the problem, such as
            ``bad minute field: 61``, ``expected 5 fields, got 6``,
            ``never fires: 0 0 30 2 *`` or ``unknown time zone: Mars/Olympus``.
    """
    cron.parse(cron_expression)
    validate_timezone(timezone)


def is_fixed_time(cron_expression: str) -> bool:
    """Tell whether the expression is a fixed-time job for the DST rules (see module doc).

    Returns:
        True unless the minute or the hour field starts with ``*``.

    Raises:
        InvalidSchedule: the expression is invalid.
    """
    return cron.parse(cron_expression).fixed_time


def _transition(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """Find the first instant (naive UTC) in ``(before, after]`` on the later offset."""
    later = after.replace(tzinfo=UTC).astimezone(zone).utcoffset()
    low, high = 0, int((after - before).total_seconds())
    while high - low > 1:
        middle = (low + high) // 2
        moment = before + middle * _ONE_SECOND
        if moment.replace(tzinfo=UTC).astimezone(zone).utcoffset() == later:
            high = middle
        else:
            low = middle
    return before + high * _ONE_SECOND


def local_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """Return the instant (aware UTC) of local wall time ``wall`` in ``zone`` (pure).

    The fixed-time rule, as for cron expressions: a wall time inside a spring-forward gap
    is the transition instant (02:30 on a 02:00->03:00 night is 03:00 local); a repeated
    wall time is its first occurrence. A one-time trigger's local ``run_at`` uses this.

    Raises:
        OverflowError: the instant is outside the years datetime can hold.
    """
    naive = wall.replace(tzinfo=None, fold=0)
    first = zone.utcoffset(naive)
    second = zone.utcoffset(naive.replace(fold=1))
    if first is None or second is None:  # a fixed-offset zone always answers
        raise ValueError(f"{zone} gives no offset for {naive}")
    # first < second: a gap (fold=0 is the offset before the transition).
    instant = (_transition(zone, naive - second, naive - first) if first < second
               else naive - first)
    return instant.replace(tzinfo=UTC)


def _search(
    spec: cron.CronSpec, zone: ZoneInfo, wall: datetime, after: datetime, second_pass: bool
) -> datetime | None:
    """Find the earliest instant (naive UTC) later than ``after`` for walls from ``wall`` on.

    Wall times are mapped to instants with their first occurrence, or with their second
    one if ``second_pass``; either mapping grows with the wall time, so the first wall
    that lands after ``after`` gives the earliest instant of that mapping.
    """
    last_year = min(wall.year + SEARCH_YEARS, MAXYEAR - 1)
    while True:
        found = cron.next_match(spec, wall, last_year)
        if found is None:
            return None
        wall = found
        # For a wall time in a gap, fold=0 gives the offset before the transition and
        # fold=1 the one after it; for a repeated wall time it is the other way round.
        first = zone.utcoffset(wall)
        second = zone.utcoffset(wall.replace(fold=1))
        if first == second:
            instant = wall - first
        elif first > second:
            instant = wall - (second if second_pass else first)
        else:
            moment = _transition(zone, wall - second, wall - first)
            if spec.fixed_time and moment > after:
                return moment
            # Skip the rest of the gap: interval jobs never fire in it, and a fixed-time
            # job's gap walls all collapse onto the same, already used, transition instant.
            wall = moment + second
            continue
        if instant > after:
            return instant
        wall += _ONE_MINUTE


def _check_after(after: datetime) -> None:
    if not isinstance(after, datetime):
        raise TypeError(f"after must be a datetime, not {type(after).__name__}")
    if after.tzinfo is None or after.utcoffset() is None:
        raise TypeError("after must be a timezone-aware datetime, got a naive one")


def next_run_at(cron_expression: str, timezone: str, after: datetime) -> datetime:
    """Compute the earliest fire instant strictly after ``after``.

    ``after`` may be in any zone and may carry seconds: "after" is by real instant.

    Returns:
        An aware UTC datetime on a whole minute.

    Raises:
        InvalidSchedule: the expression or zone is invalid, no match in the next
            ``SEARCH_YEARS`` years survives the zone's DST gaps, or datetime's calendar
            (years 1-9999) ends first.
        TypeError: ``after`` is naive or not a datetime (a programmer error, deliberately
            not a ``ValueError`` so that it is never reported as a user's mistake).
    """
    spec = cron.parse(cron_expression)
    zone = validate_timezone(timezone)
    _check_after(after)
    try:
        return _next_after(spec, zone, after, timezone)
    except OverflowError:
        # The search ran off datetime's calendar (years 1-9999) in this zone.
        raise InvalidSchedule(
            f"no fire time within the calendar's range (years 1-9999): {spec.text} in"
            f" {timezone}") from None


def _next_after(spec: cron.CronSpec, zone: ZoneInfo, after: datetime, timezone: str
                ) -> datetime:
    after_utc = after.astimezone(UTC).replace(tzinfo=None)
    local = after.astimezone(zone)
    start = local.replace(tzinfo=None, fold=0, second=0, microsecond=0) + _ONE_MINUTE
    best = _search(spec, zone, start, after_utc, second_pass=False)
    if not spec.fixed_time:
        # Second passes through repeated wall times matter only if `after` sits in a
        # repeated stretch: otherwise the first search's wall time is the earliest match
        # and its first occurrence comes before its second.
        shift = local.utcoffset() - local.replace(fold=1).utcoffset()
        if local.fold or shift > _ZERO:
            wall = (local.replace(tzinfo=None) - shift).replace(second=0, microsecond=0)
            repeat = _search(spec, zone, wall + _ONE_MINUTE, after_utc, second_pass=True)
            if repeat is not None and (best is None or repeat < best):
                best = repeat
    if best is None:
        raise InvalidSchedule(
            f"no fire time within {SEARCH_YEARS} years: {spec.text} in {timezone}"
        )
    return best.replace(tzinfo=UTC)


def next_run_times(
    cron_expression: str, timezone: str, after: datetime, count: int
) -> list[datetime]:
    """Preview the next ``count`` fire instants after ``after``, in increasing order.

    Returns:
        ``count`` aware UTC datetimes, strictly increasing.

    Raises:
        ValueError: ``count`` is not between 1 and ``MAX_PREVIEW``.
        InvalidSchedule: as :func:`next_run_at`.
        TypeError: as :func:`next_run_at`.
    """
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"count must be an int, not {type(count).__name__}")
    if not 1 <= count <= MAX_PREVIEW:
        raise ValueError(f"count must be between 1 and {MAX_PREVIEW}, got {count}")
    times: list[datetime] = []
    for _ in range(count):
        after = next_run_at(cron_expression, timezone, after)
        times.append(after)
    return times
