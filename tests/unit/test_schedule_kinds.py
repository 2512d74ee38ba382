"""Schedule kinds (app.schedule.kinds): each kind's occurrences, exact UTC instants."""

from __future__ import annotations

import datetime as dt

import pytest

from app.errors import InvalidSchedule
from app.schedule.kinds import Cron, Once, schedule_of

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)


def at(hour: int, minute: int = 0, day: int = 1, month: int = 6) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=UTC)


def test_the_columns_say_the_kind_in_one_place() -> None:
    assert schedule_of({"run_at": at(9), "cron_expression": None, "timezone": "UTC"}) == (
        Once(at(9)))
    assert schedule_of({"run_at": None, "cron_expression": "0 * * * *",
                        "timezone": "Europe/Paris"}) == Cron("0 * * * *", "Europe/Paris")
    assert (Cron.field, Once.field) == ("cron_expression", "run_at")
    assert (Cron.pausable, Once.pausable) == (True, False)


def test_a_cron_schedule_s_due_occurrences_count_from_the_stored_instant() -> None:
    due, following = Cron("0 * * * *", "UTC").due(at(9), NOW, limit=10)
    assert (due, following) == ([at(9), at(10), at(11), at(12)], at(13))
    # Cut short by the limit: the next one is the first left out.
    assert Cron("0 * * * *", "UTC").due(at(9), NOW, limit=2) == ([at(9), at(10)], at(11))


def test_a_one_time_schedule_has_one_occurrence_then_none() -> None:
    once = Once(at(11, 30))
    assert once.due(at(11, 30), NOW, limit=10) == ([at(11, 30)], None)
    assert once.times(at(11), 3) == [at(11, 30)]
    assert once.times(at(11, 30), 3) == []
    assert once.first_for_save(at(11)) == at(11, 30)
    with pytest.raises(InvalidSchedule, match="must be in the future"):
        once.first_for_save(at(11, 30))
    assert once.describe("Europe/Paris") == "Once, at 2026-06-01T13:30:00+02:00"


def test_between_lists_a_range_and_says_where_the_limit_cut_it() -> None:
    hourly = Cron("0 * * * *", "UTC")
    assert hourly.between(at(9), at(12), limit=10) == ([at(9), at(10), at(11)], None)
    assert hourly.between(at(9), at(12), limit=2) == ([at(9), at(10)], at(11))
    # The range's start is inclusive to the microsecond, its end exclusive.
    assert hourly.between(at(9) + dt.timedelta(microseconds=1), at(11), limit=10) == (
        [at(10)], None)
    assert Once(at(10)).between(at(9), at(11), limit=10) == ([at(10)], None)
    assert Once(at(11)).between(at(9), at(11), limit=10) == ([], None)


def test_a_cron_occurrence_moved_by_daylight_saving_says_so() -> None:
    # America/New_York, 2026-03-08: 02:00 EST -> 03:00 EDT; 2026-11-01: 02:00 EDT -> 01:00.
    daily = Cron("30 2 * * *", "America/New_York")
    assert daily.times(at(0, day=8, month=3), 2) == [at(7, day=8, month=3),
                                                     at(6, 30, day=9, month=3)]
    assert daily.dst_note(at(7, day=8, month=3), "America/New_York") == (
        "moved: its wall time falls in a DST gap")
    assert daily.dst_note(at(6, 30, day=9, month=3), "America/New_York") is None
    half_hourly = Cron("30 * * * *", "America/New_York")
    assert half_hourly.times(at(5, day=1, month=11), 2) == [at(5, 30, day=1, month=11),
                                                            at(6, 30, day=1, month=11)]
    assert half_hourly.dst_note(at(6, 30, day=1, month=11), "America/New_York") == (
        "second pass of an hour DST repeats")
