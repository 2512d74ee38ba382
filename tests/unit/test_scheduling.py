"""Fire times in real zones: DST rules, zone validation and the public API's contract.

Expected instants are hard-coded in UTC. Each DST block starts with a reference table of
the transition, worked out from the tzdata rules and checked against zoneinfo once.
"""

from __future__ import annotations

import copy
import itertools
import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from app.errors import InvalidSchedule
from app.schedule.scheduling import (
    MAX_PREVIEW,
    is_fixed_time,
    next_run_at,
    next_run_times,
    validate_schedule,
    validate_timezone,
)


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


def check(expression: str, zone: str, after: datetime, expected: list[datetime]) -> None:
    assert next_run_times(expression, zone, after, len(expected)) == expected


# America/New_York, spring forward, Sunday 2026-03-08:
#   06:59Z = 01:59 EST (-05:00)  ->  07:00Z = 03:00 EDT (-04:00); local 02:00-02:59 is skipped.
NEW_YORK_SPRING = [
    # fixed time: the skipped 02:30 fires once, at the transition (03:00 EDT)
    ("30 2 * * *", utc(2026, 3, 7, 5), [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7),
                                        utc(2026, 3, 9, 6, 30)]),
    ("30 2 * * *", utc(2026, 3, 8, 7), [utc(2026, 3, 9, 6, 30)]),
    # several skipped wall times collapse onto one fire
    ("0,30 2 * * *", utc(2026, 3, 7, 8), [utc(2026, 3, 8, 7), utc(2026, 3, 9, 6),
                                          utc(2026, 3, 9, 6, 30)]),
    ("0 2,3 * * *", utc(2026, 3, 8, 5), [utc(2026, 3, 8, 7), utc(2026, 3, 9, 6),
                                         utc(2026, 3, 9, 7)]),
    # cronie calls "0 0-23" fixed time too (the hour field does not start with "*")
    ("0 0-23 * * *", utc(2026, 3, 8, 5, 30), [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7),
                                              utc(2026, 3, 8, 8)]),
    ("0 9 * * 1-5", utc(2026, 3, 6, 15), [utc(2026, 3, 9, 13)]),
    # interval: the skipped hour simply does not happen
    ("0 * * * *", utc(2026, 3, 8, 4, 30), [utc(2026, 3, 8, 5), utc(2026, 3, 8, 6),
                                           utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]),
    ("*/30 * * * *", utc(2026, 3, 8, 6, 15), [utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7),
                                              utc(2026, 3, 8, 7, 30)]),
    ("5 */2 * * *", utc(2026, 3, 8, 5), [utc(2026, 3, 8, 5, 5), utc(2026, 3, 8, 8, 5)]),
    ("* 2 * * *", utc(2026, 3, 8, 5), [utc(2026, 3, 9, 6), utc(2026, 3, 9, 6, 1)]),
]

# America/New_York, fall back, Sunday 2026-11-01:
#   05:59Z = 01:59 EDT (-04:00)  ->  06:00Z = 01:00 EST (-05:00); local 01:00-01:59 twice.
NEW_YORK_FALL = [
    # fixed time: first occurrence only
    ("30 1 * * *", utc(2026, 10, 31, 12), [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]),
    ("30 1 * * *", utc(2026, 11, 1, 5, 30), [utc(2026, 11, 2, 6, 30)]),
    ("30 1 * * *", utc(2026, 11, 1, 6, 10), [utc(2026, 11, 2, 6, 30)]),
    ("0 0-23 * * *", utc(2026, 11, 1, 4, 30), [utc(2026, 11, 1, 5), utc(2026, 11, 1, 7)]),
    # interval: both passes, in real-time order
    ("*/30 * * * *", utc(2026, 11, 1, 4, 45), [utc(2026, 11, 1, 5), utc(2026, 11, 1, 5, 30),
                                               utc(2026, 11, 1, 6), utc(2026, 11, 1, 6, 30),
                                               utc(2026, 11, 1, 7)]),
    ("0 * * * *", utc(2026, 11, 1, 4, 30), [utc(2026, 11, 1, 5), utc(2026, 11, 1, 6),
                                            utc(2026, 11, 1, 7)]),
    ("15 * * * *", utc(2026, 11, 1, 5, 20), [utc(2026, 11, 1, 6, 15), utc(2026, 11, 1, 7, 15)]),
    ("*/20 * * * *", utc(2026, 11, 1, 6, 5), [utc(2026, 11, 1, 6, 20), utc(2026, 11, 1, 6, 40),
                                              utc(2026, 11, 1, 7)]),
    ("*/30 1 * * *", utc(2026, 11, 1, 5, 10), [utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6),
                                               utc(2026, 11, 1, 6, 30), utc(2026, 11, 2, 6)]),
]

# Europe/London, Sunday 2026-03-29: 00:59Z = 00:59 GMT -> 01:00Z = 02:00 BST (01:xx skipped).
# Sunday 2026-10-25: 00:59Z = 01:59 BST -> 01:00Z = 01:00 GMT (01:xx twice).
LONDON = [
    ("30 1 * * *", utc(2026, 3, 28, 12), [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]),
    ("*/30 * * * *", utc(2026, 3, 29, 0, 15), [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1),
                                               utc(2026, 3, 29, 1, 30)]),
    ("30 1 * * *", utc(2026, 10, 24, 12), [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
    ("*/30 1 * * *", utc(2026, 10, 25), [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1),
                                         utc(2026, 10, 25, 1, 30), utc(2026, 10, 26, 1)]),
]

# Australia/Lord_Howe shifts by 30 minutes.
# Sunday 2026-10-04: 15:29Z = 01:59 (+10:30) -> 15:30Z = 02:30 (+11:00); 02:00-02:29 skipped.
# Sunday 2026-04-05: 14:59Z = 01:59 (+11:00) -> 15:00Z = 01:30 (+10:30); 01:30-01:59 twice.
LORD_HOWE = [
    ("15 2 * * *", utc(2026, 10, 2, 16), [utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 15, 15)]),
    ("*/15 * * * *", utc(2026, 10, 3, 15), [utc(2026, 10, 3, 15, 15), utc(2026, 10, 3, 15, 30),
                                            utc(2026, 10, 3, 15, 45)]),
    ("45 1 * * *", utc(2026, 4, 4, 12), [utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15)]),
    ("*/15 * * * *", utc(2026, 4, 4, 14, 20), [utc(2026, 4, 4, 14, 30), utc(2026, 4, 4, 14, 45),
                                               utc(2026, 4, 4, 15), utc(2026, 4, 4, 15, 15),
                                               utc(2026, 4, 4, 15, 30)]),
]

# Pacific/Chatham runs at +12:45 / +13:45.
# Sunday 2026-09-27: 13:59Z = 02:44 (+12:45) -> 14:00Z = 03:45 (+13:45); 02:45-03:44 skipped.
# Sunday 2026-04-05: 13:59Z = 03:44 (+13:45) -> 14:00Z = 02:45 (+12:45); 02:45-03:44 twice.
CHATHAM = [
    ("0 3 * * *", utc(2026, 9, 26), [utc(2026, 9, 26, 14), utc(2026, 9, 27, 13, 15)]),
    ("*/30 * * * *", utc(2026, 9, 26, 13, 20), [utc(2026, 9, 26, 13, 45), utc(2026, 9, 26, 14, 15),
                                                utc(2026, 9, 26, 14, 45)]),
    ("0 3 * * *", utc(2026, 4, 4), [utc(2026, 4, 4, 13, 15), utc(2026, 4, 5, 14, 15)]),
    ("0 * * * *", utc(2026, 4, 4, 12, 30), [utc(2026, 4, 4, 13, 15), utc(2026, 4, 4, 14, 15),
                                            utc(2026, 4, 4, 15, 15)]),
]

# America/Santiago skips midnight: Sunday 2026-09-06, 03:59Z = 23:59 (-04:00) on the 5th
# -> 04:00Z = 01:00 (-03:00) on the 6th. A daily midnight job runs at 01:00 that day.
SANTIAGO = [
    ("@daily", utc(2026, 9, 5, 12), [utc(2026, 9, 6, 4), utc(2026, 9, 7, 3)]),
]

# Asia/Kolkata is +05:30 all year; UTC never shifts.
NO_DST = [
    ("Asia/Kolkata", "30 2 * * *", utc(2026, 3, 8), [utc(2026, 3, 8, 21), utc(2026, 3, 9, 21)]),
    ("Asia/Kolkata", "0 9 * * 1-5", utc(2026, 3, 6, 12), [utc(2026, 3, 9, 3, 30)]),
    ("Asia/Kolkata", "*/45 * * * *", utc(2026, 1, 1), [utc(2026, 1, 1, 0, 15),
                                                      utc(2026, 1, 1, 0, 30)]),
    ("UTC", "30 2 * * *", utc(2026, 3, 8), [utc(2026, 3, 8, 2, 30), utc(2026, 3, 9, 2, 30)]),
    ("UTC", "*/5 * * * *", utc(2026, 1, 1, 0, 2, 30), [utc(2026, 1, 1, 0, 5)]),
]


def _cases(zone: str, rows: list) -> list:
    return [pytest.param(zone, *row, id=f"{zone} {row[0]} after {row[1]:%m-%dT%H:%M}")
            for row in rows]


@pytest.mark.parametrize(("zone", "expression", "after", "expected"), [
    *_cases("America/New_York", NEW_YORK_SPRING),
    *_cases("America/New_York", NEW_YORK_FALL),
    *_cases("Europe/London", LONDON),
    *_cases("Australia/Lord_Howe", LORD_HOWE),
    *_cases("Pacific/Chatham", CHATHAM),
    *_cases("America/Santiago", SANTIAGO),
    *[pytest.param(*row, id=f"{row[0]} {row[1]}") for row in NO_DST],
])
def test_fire_times_follow_the_local_wall_clock_and_the_dst_rules(
    zone: str, expression: str, after: datetime, expected: list[datetime]
) -> None:
    check(expression, zone, after, expected)


def test_a_schedule_whose_every_match_falls_into_a_dst_gap_is_reported_not_looped() -> None:
    # Interval job at 02:xx on the second Sunday of March: US clocks always skip it.
    validate_schedule("* 2 * 3 0#2", "America/New_York")
    with pytest.raises(InvalidSchedule) as raised:
        next_run_at("* 2 * 3 0#2", "America/New_York", utc(2026, 1, 1))
    assert raised.value.message == (
        "no fire time within 400 years: * 2 * 3 0#2 in America/New_York"
    )
    # The fixed-time spelling fires at the transition each year.
    check("0 2 * 3 0#2", "America/New_York", utc(2026, 1, 1), [utc(2026, 3, 8, 7)])


@pytest.mark.parametrize(("expression", "fixed"), [
    ("30 2 * * *", True),
    ("0 9 * * 1-5", True),
    ("15,45 3 * * *", True),
    ("@daily", True),
    ("@weekly", True),
    ("0 0-23 * * *", True),
    ("*/15 * * * *", False),
    ("0 * * * *", False),
    ("@hourly", False),
    ("5 */2 * * *", False),
    ("* 3 * * *", False),
])
def test_a_job_is_fixed_time_unless_its_minute_or_hour_field_starts_with_a_star(
    expression: str, fixed: bool
) -> None:
    assert is_fixed_time(expression) is fixed


def test_is_fixed_time_rejects_invalid_expressions() -> None:
    with pytest.raises(InvalidSchedule, match="bad minute field: 60"):
        is_fixed_time("60 * * * *")


@pytest.mark.parametrize(("name", "message"), [
    ("Mars/Olympus", "unknown time zone: Mars/Olympus"),
    ("", "unknown time zone: ''"),
    (" UTC", "unknown time zone: ' UTC'; did you mean UTC?"),
    ("utc", "unknown time zone: utc; did you mean UTC?"),
    ("Europe/Berlinn", "unknown time zone: Europe/Berlinn; did you mean Europe/Berlin?"),
    ("localtime", "unknown time zone: localtime"),
    ("posixrules", "unknown time zone: posixrules"),
    ("posix/Europe/London",
     "unknown time zone: posix/Europe/London; did you mean Europe/London?"),
    ("right/UTC", "unknown time zone: right/UTC"),
    ("../etc", "unknown time zone: ../etc"),
    ("/usr/share/zoneinfo/UTC", "unknown time zone: /usr/share/zoneinfo/UTC"),
    ("Factory", "unknown time zone: Factory"),
    ("Europe/London\n", "unknown time zone: 'Europe/London\\n'; did you mean Europe/London?"),
])
def test_unknown_and_host_specific_time_zones_are_rejected(name: str, message: str) -> None:
    with pytest.raises(InvalidSchedule) as raised:
        validate_schedule("0 0 * * *", name)
    assert raised.value.message == message


@pytest.mark.parametrize("name", ["UTC", "Etc/UTC", "America/New_York", "US/Eastern",
                                  "Pacific/Chatham", "Etc/GMT+5"])
def test_iana_zones_load_from_the_pinned_tzdata_package(name: str) -> None:
    zone = validate_timezone(name)
    assert isinstance(zone, ZoneInfo)
    assert zone.key == name
    assert validate_timezone(name) is zone
    validate_schedule("0 0 * * *", name)


@pytest.mark.parametrize("name", [None, 5, b"UTC"])
def test_a_time_zone_that_is_not_a_string_is_invalid(name: object) -> None:
    with pytest.raises(InvalidSchedule, match="time zone must be a string"):
        validate_timezone(name)  # type: ignore[arg-type]


def test_validate_schedule_reports_the_expression_before_the_zone() -> None:
    with pytest.raises(InvalidSchedule, match="expected 5 fields, got 1"):
        validate_schedule("daily", "Mars/Olympus")


@pytest.mark.parametrize("after", [
    datetime(2026, 3, 7, 0, 0, tzinfo=ZoneInfo("Asia/Tokyo")),  # 2026-03-06T15:00Z
    datetime(2026, 3, 6, 10, 0, tzinfo=timezone(timedelta(hours=-5))),
    utc(2026, 3, 6, 15),
], ids=["tokyo", "fixed-offset", "utc"])
def test_after_may_be_in_any_zone_and_is_compared_by_real_instant(after: datetime) -> None:
    assert next_run_at("30 2 * * *", "America/New_York", after) == utc(2026, 3, 7, 7, 30)


@pytest.mark.parametrize(("after", "expected"), [
    (utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 0, 10)),
    (datetime(2026, 1, 1, 0, 5, 0, 1, tzinfo=UTC), utc(2026, 1, 1, 0, 10)),
    (utc(2026, 1, 1, 0, 4, 59), utc(2026, 1, 1, 0, 5)),
], ids=["exactly-on-a-fire-time", "a-microsecond-later", "a-second-earlier"])
def test_the_result_is_strictly_after_the_reference_instant(
    after: datetime, expected: datetime
) -> None:
    assert next_run_at("*/5 * * * *", "UTC", after) == expected


def test_results_are_aware_utc_on_a_whole_minute() -> None:
    result = next_run_at("*/15 * * * *", "Asia/Kolkata", datetime(2026, 5, 5, 3, 7, 31, 9, UTC))
    assert result.tzinfo is UTC
    assert (result.second, result.microsecond) == (0, 0)


def test_next_run_at_is_a_pure_function() -> None:
    after = datetime(2026, 11, 1, 1, 10, fold=1, tzinfo=ZoneInfo("America/New_York"))
    before = copy.deepcopy(after)
    first = next_run_times("*/30 * * * *", "America/New_York", after, 10)
    second = next_run_times("*/30 * * * *", "America/New_York", after, 10)
    assert first == second
    assert first is not second
    assert after == before and after.fold == 1 and after.tzinfo is before.tzinfo


@pytest.mark.parametrize("after", [datetime(2026, 1, 1), datetime(2026, 3, 8, 2, 30)])
def test_a_naive_reference_time_is_a_programmer_error(after: datetime) -> None:
    with pytest.raises(TypeError, match="after must be a timezone-aware datetime"):
        next_run_at("* * * * *", "UTC", after)


def test_a_reference_time_must_be_a_datetime() -> None:
    with pytest.raises(TypeError, match="after must be a datetime, not str"):
        next_run_at("* * * * *", "UTC", "2026-01-01T00:00:00Z")  # type: ignore[arg-type]


def test_next_run_times_returns_count_strictly_increasing_times() -> None:
    times = next_run_times("*/7 * * * *", "Europe/London", utc(2026, 10, 24, 23), MAX_PREVIEW)
    assert len(times) == MAX_PREVIEW
    assert all(earlier < later for earlier, later in itertools.pairwise(times))


@pytest.mark.parametrize("count", [0, -1, MAX_PREVIEW + 1])
def test_next_run_times_rejects_a_count_out_of_bounds(count: int) -> None:
    with pytest.raises(ValueError, match=f"count must be between 1 and {MAX_PREVIEW}"):
        next_run_times("* * * * *", "UTC", utc(2026, 1, 1), count)


@pytest.mark.parametrize("count", [True, 2.0, "3"])
def test_next_run_times_rejects_a_count_that_is_not_an_int(count: object) -> None:
    with pytest.raises(TypeError, match="count must be an int"):
        next_run_times("* * * * *", "UTC", utc(2026, 1, 1), count)  # type: ignore[arg-type]


@pytest.mark.parametrize(("expression", "zone", "message"), [
    ("0 0 31 4 *", "UTC", "never fires: 0 0 31 4 *"),
    ("* * * *", "UTC", "expected 5 fields, got 4"),
    ("* * * * *", "Mars/Olympus", "unknown time zone: Mars/Olympus"),
])
def test_every_entry_point_raises_invalid_schedule(
    expression: str, zone: str, message: str
) -> None:
    pattern = f"^{re.escape(message)}$"
    with pytest.raises(InvalidSchedule, match=pattern):
        next_run_at(expression, zone, utc(2026, 1, 1))
    with pytest.raises(InvalidSchedule, match=pattern):
        next_run_times(expression, zone, utc(2026, 1, 1), 3)
    with pytest.raises(InvalidSchedule, match=pattern):
        validate_schedule(expression, zone)
