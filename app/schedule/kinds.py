"""Schedule kinds: what a trigger's schedule columns mean, one class per kind.

The occurrence code (:mod:`app.schedule.occurrences`), the dispatcher, edits, previews,
backfills and descriptions take a :class:`Schedule`, never a trigger's columns, so a new
kind (an interval, say) is one class here, its column and its migration.
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

    run_at: dt.datetime

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        return self.run_at if self.run_at > after else None

    def describe(self, timezone: str) -> str:
        return f"Once, at {local_time(self.run_at, timezone).isoformat()}"


def local_time(moment: dt.datetime, timezone: str) -> dt.datetime:
    """``moment`` on the zone's wall clock; in UTC when the zone cannot show it (an
    instant near the end of datetime's range in a zone east of UTC)."""
    try:
        return moment.astimezone(scheduling.validate_timezone(timezone))
    except OverflowError:
        return moment.astimezone(dt.UTC)


def schedule_of(source: Any) -> Schedule:
    """The schedule a trigger's columns hold (a Trigger, a row, or a mapping of them):
    ``run_at`` set is a one-time trigger, else ``cron_expression`` in ``timezone``."""
    get = source.get if isinstance(source, dict) else functools.partial(getattr, source)
    run_at = get("run_at")
    if run_at is not None:
        return Once(run_at)
    return Cron(get("cron_expression"), get("timezone"))
