"""Schedule kinds: what a trigger's schedule columns mean, one class per kind.

The occurrence code (:mod:`app.schedule.occurrences`), the dispatcher, edits, previews,
backfills and descriptions take a :class:`Schedule`, never a trigger's columns, so a new
kind is one class here, its columns and its migration.
:func:`schedule_of` is the one place that reads which kind a row is.

Pure: the reference time is always an argument.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import functools
from typing import Any, ClassVar

from app.errors import InvalidSchedule
from app.limits import RUN_AT_LIMIT
from app.schedule import cron, scheduling
from app.schedule.descriptions import describe_cron

_ONE_SECOND = dt.timedelta(seconds=1)
_ONE_MICROSECOND = dt.timedelta(microseconds=1)

# next_run_at is pure, and triggers that share a schedule are due at the same instant
# (thousands of "0 * * * *" triggers at the top of the hour), so one computation serves
# them all within a batch.
_cron_next = functools.lru_cache(maxsize=65_536)(scheduling.next_run_at)


class Schedule(abc.ABC):
    """When a trigger's occurrences fall. Instants are aware UTC datetimes."""

    #: The kind's name, as the API and the console show it.
    kind: ClassVar[str]
    #: The column that holds it: the field an error about it names.
    field: ClassVar[str]
    #: Whether a disabled trigger of this kind is paused. A one-time trigger's
    #: ``enabled = false`` also means "fired" (the dispatcher sets it when it records
    #: the occurrence), so for it a disabled trigger does not close its pending runs.
    pausable: ClassVar[bool] = True
    #: Whether its occurrences are claimed up to a tick ahead and held until their
    #: instant (second precision: app.firing.dispatch), rather than run at the first
    #: tick at or after it. Cron stays on its minute ticks.
    held: ClassVar[bool] = False

    @abc.abstractmethod
    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        """The first occurrence strictly after ``after``; None when none is left.

        Raises:
            InvalidSchedule: the schedule no longer computes (a stored row gone bad).
        """

    @abc.abstractmethod
    def describe(self, timezone: str) -> str:
        """The schedule in English words."""

    def dst_note(self, moment: dt.datetime, timezone: str) -> str | None:
        """Why a daylight-saving rule moved the occurrence at ``moment``; None if none did."""
        return None

    def first_for_save(self, now: dt.datetime) -> dt.datetime:
        """``next_run_at`` for a trigger saved now with this schedule.

        Raises:
            InvalidSchedule: no occurrence is left after ``now``.
        """
        found = self.next_after(now)
        if found is None:
            raise InvalidSchedule("must be in the future")
        return found

    def due(self, stored_next_run_at: dt.datetime, now: dt.datetime, limit: int,
            ) -> tuple[list[dt.datetime], dt.datetime | None]:
        """Up to ``limit`` due occurrences (``<= now``), oldest first, from the first one
        at or after ``stored_next_run_at``, each next one counted from the scheduled
        instant, never from the wall clock; and the occurrence after those (None: none
        left, the trigger is finished)."""
        due: list[dt.datetime] = []
        occurrence = self.next_after(stored_next_run_at - _ONE_SECOND)
        while occurrence is not None and occurrence <= now and len(due) < limit:
            due.append(occurrence)
            occurrence = self.next_after(occurrence)
        return due, occurrence

    def times(self, after: dt.datetime, count: int) -> list[dt.datetime]:
        """The next ``count`` occurrences after ``after`` (fewer when none are left)."""
        times: list[dt.datetime] = []
        while len(times) < count and (after := self.next_after(after)) is not None:
            times.append(after)
        return times

    def between(self, start: dt.datetime, end: dt.datetime, limit: int,
                ) -> tuple[list[dt.datetime], dt.datetime | None]:
        """The occurrences in ``[start, end)``, at most ``limit``; and the first one in
        the range left out by the limit (None if none was)."""
        found: list[dt.datetime] = []
        moment = self.next_after(start - _ONE_MICROSECOND)
        while moment is not None and moment < end:
            if len(found) == limit:
                return found, moment
            found.append(moment)
            moment = self.next_after(moment)
        return found, None


@dataclasses.dataclass(frozen=True)
class Cron(Schedule):
    """A cron expression in an IANA zone (:mod:`app.schedule.scheduling` says how DST
    transitions are handled)."""

    kind: ClassVar[str] = "cron"
    field: ClassVar[str] = "cron_expression"

    expression: str
    timezone: str

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        return _cron_next(self.expression, self.timezone, after)

    def describe(self, timezone: str) -> str:
        return describe_cron(self.expression)

    def dst_note(self, moment: dt.datetime, timezone: str) -> str | None:
        local = local_time(moment, timezone)
        if not cron.matches(cron.parse(self.expression), local.replace(tzinfo=None)):
            return "moved: its wall time falls in a DST gap"
        if local.fold:
            return "second pass of an hour DST repeats"
        return None


@dataclasses.dataclass(frozen=True)
class Once(Schedule):
    """One occurrence, at ``run_at``."""

    kind: ClassVar[str] = "once"
    field: ClassVar[str] = "run_at"
    pausable: ClassVar[bool] = False
    held: ClassVar[bool] = True

    run_at: dt.datetime

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        return self.run_at if self.run_at > after else None

    def describe(self, timezone: str) -> str:
        return f"Once, at {local_time(self.run_at, timezone).isoformat()}"


@dataclasses.dataclass(frozen=True)
class Interval(Schedule):
    """Every ``every_s`` seconds from the ``start_at`` anchor, in absolute time.

    Occurrences fall at ``start_at + k * every_s`` for k = 0, 1, 2, ...: each one is
    counted from the anchor, never from the previous run, so nothing drifts, however
    late a run starts or however long it takes; the zone changes only how an instant is
    shown (no DST effect). The anchor is a whole second.
    """

    kind: ClassVar[str] = "interval"
    field: ClassVar[str] = "interval_s"
    held: ClassVar[bool] = True

    every_s: int
    start_at: dt.datetime

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        if after < self.start_at:
            return self.start_at
        period = dt.timedelta(seconds=self.every_s)
        try:
            found = self.start_at + ((after - self.start_at) // period + 1) * period
        except OverflowError:
            return None
        return found if found < RUN_AT_LIMIT else None

    def describe(self, timezone: str) -> str:
        return f"Every {period_words(self.every_s)}"


_UNITS = ((86_400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def period_words(seconds: int) -> str:
    """``seconds`` in the largest unit that divides it: "second", "90 seconds",
    "5 minutes", "day"."""
    size, unit = next((size, unit) for size, unit in _UNITS if seconds % size == 0)
    count = seconds // size
    return unit if count == 1 else f"{count} {unit}s"


def local_time(moment: dt.datetime, timezone: str) -> dt.datetime:
    """``moment`` on the zone's wall clock; in UTC when the zone cannot show it (an
    instant near the end of datetime's range in a zone east of UTC)."""
    try:
        return moment.astimezone(scheduling.validate_timezone(timezone))
    except OverflowError:
        return moment.astimezone(dt.UTC)


def schedule_of(source: Any) -> Schedule:
    """The schedule a trigger's columns hold (a Trigger, a row, or a mapping of them):
    ``run_at`` set is a one-time trigger, ``interval_s`` an interval from ``start_at``,
    else ``cron_expression`` in ``timezone``."""
    get = source.get if isinstance(source, dict) else functools.partial(getattr, source)
    run_at = get("run_at")
    if run_at is not None:
        return Once(run_at)
    interval_s = get("interval_s")
    if interval_s is not None:
        return Interval(interval_s, get("start_at"))
    return Cron(get("cron_expression"), get("timezone"))
