"""The cron dialect: syntax, rejections and calendar rules, all evaluated in UTC."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime

import pytest

from app.errors import InvalidSchedule, PermanentError
from app.schedule import cron
from app.schedule.scheduling import next_run_times, validate_schedule


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


def days(*dates: tuple[int, int, int]) -> list[datetime]:
    return [utc(*value) for value in dates]


# Each row: expression, after, the next fire times (all in UTC, where wall = instant).
CALENDAR_CASES = [
    ("*/15 * * * *", utc(2026, 1, 1, 0, 7), [utc(2026, 1, 1, 0, 15), utc(2026, 1, 1, 0, 30)]),
    ("1-30/10 * * * *", utc(2026, 1, 1), [utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 11),
                                          utc(2026, 1, 1, 0, 21), utc(2026, 1, 1, 1, 1)]),
    ("5/15 * * * *", utc(2026, 1, 1), [utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 0, 20),
                                       utc(2026, 1, 1, 0, 35), utc(2026, 1, 1, 0, 50)]),
    ("0 */8 * * *", utc(2026, 1, 1, 1), [utc(2026, 1, 1, 8), utc(2026, 1, 1, 16), utc(2026, 1, 2)]),
    ("0 0 31 * *", utc(2026, 1, 31), days((2026, 3, 31), (2026, 5, 31), (2026, 7, 31),
                                          (2026, 8, 31))),
    ("0 0 L * *", utc(2026, 1, 1), days((2026, 1, 31), (2026, 2, 28), (2026, 3, 31),
                                        (2026, 4, 30))),
    ("0 0 L 2 *", utc(2027, 3, 1), days((2028, 2, 29), (2029, 2, 28))),
    ("0 0 29 2 *", utc(2026, 1, 1), days((2028, 2, 29), (2032, 2, 29))),
    ("0 0 15W * *", utc(2026, 1, 1), days((2026, 1, 15), (2026, 2, 16), (2026, 3, 16),
                                          (2026, 4, 15))),
    ("0 0 15W 8 *", utc(2026, 1, 1), days((2026, 8, 14))),  # Saturday 15th -> Friday
    ("0 0 1W 8 *", utc(2026, 1, 1), days((2026, 8, 3))),  # Saturday 1st -> Monday 3rd
    ("0 0 31W 5 *", utc(2026, 1, 1), days((2026, 5, 29))),  # Sunday 31st -> Friday 29th
    ("0 0 LW * *", utc(2026, 1, 1), days((2026, 1, 30), (2026, 2, 27), (2026, 3, 31),
                                         (2026, 4, 30), (2026, 5, 29))),
    ("0 0 * * 5#3", utc(2026, 1, 1), days((2026, 1, 16), (2026, 2, 20), (2026, 3, 20))),
    ("0 0 * * FRI#3", utc(2026, 1, 1), days((2026, 1, 16), (2026, 2, 20), (2026, 3, 20))),
    ("0 0 * * 5L", utc(2026, 1, 1), days((2026, 1, 30), (2026, 2, 27), (2026, 3, 27))),
    ("0 0 * 2 1#5", utc(2026, 1, 1), days((2044, 2, 29), (2072, 2, 29), (2112, 2, 29))),
    ("0 9 * * MON-FRI", utc(2026, 1, 2, 10), [utc(2026, 1, 5, 9), utc(2026, 1, 6, 9)]),
    ("0 0 1 JAN *", utc(2026, 6, 1), days((2027, 1, 1), (2028, 1, 1))),
    ("0 0 1 jan-feb *", utc(2026, 1, 1), days((2026, 2, 1), (2027, 1, 1))),
    ("0 0 * * 7", utc(2026, 1, 1), days((2026, 1, 4), (2026, 1, 11))),
    ("0 0 * * sun", utc(2026, 1, 1), days((2026, 1, 4), (2026, 1, 11))),
    ("0 0 * * 5-7", utc(2026, 1, 1), days((2026, 1, 2), (2026, 1, 3), (2026, 1, 4),
                                          (2026, 1, 9))),
    ("@yearly", utc(2026, 1, 1), days((2027, 1, 1))),
    ("@annually", utc(2026, 1, 1), days((2027, 1, 1))),
    ("@monthly", utc(2026, 1, 1), days((2026, 2, 1))),
    ("@weekly", utc(2026, 1, 1), days((2026, 1, 4))),
    ("@daily", utc(2026, 1, 1), days((2026, 1, 2))),
    ("@midnight", utc(2026, 1, 1), days((2026, 1, 2))),
    ("@hourly", utc(2026, 1, 1), [utc(2026, 1, 1, 1)]),
    ("  0   12 *  *\t* ", utc(2026, 1, 1), [utc(2026, 1, 1, 12)]),
]


@pytest.mark.parametrize(("expression", "after", "expected"), CALENDAR_CASES,
                         ids=[case[0].strip() for case in CALENDAR_CASES])
def test_calendar_rules_give_these_fire_times(
    expression: str, after: datetime, expected: list[datetime]
) -> None:
    assert next_run_times(expression, "UTC", after, len(expected)) == expected


# The day rule. 2026-03-13 is a Friday, 2026-04-13 a Monday; Mondays of January 2026:
# 5, 12, 19, 26; first Sundays of 2026: Jan 4, Feb 1, Mar 1.
DAY_RULE_CASES = [
    # Both day fields restricted: a day matching either one fires (OR).
    ("0 0 13 * 5", utc(2026, 3, 1), days((2026, 3, 6), (2026, 3, 13), (2026, 3, 20),
                                         (2026, 3, 27), (2026, 4, 3), (2026, 4, 10),
                                         (2026, 4, 13))),
    ("0 0 1-7 * 0", utc(2026, 1, 1), days((2026, 1, 2), (2026, 1, 3), (2026, 1, 4),
                                          (2026, 1, 5), (2026, 1, 6), (2026, 1, 7),
                                          (2026, 1, 11))),
    ("0 0 30 2 1", utc(2026, 1, 1), days((2026, 2, 2), (2026, 2, 9))),
    # Either field starts with "*": both must match (AND), even though "*/2" and "*/7"
    # restrict the days. This is cronie's DOM_STAR/DOW_STAR behaviour.
    ("0 0 */2 * 1", utc(2026, 1, 1), days((2026, 1, 5), (2026, 1, 19), (2026, 2, 9),
                                          (2026, 2, 23))),
    ("0 0 1-7 * */7", utc(2026, 1, 1), days((2026, 1, 4), (2026, 2, 1), (2026, 3, 1))),
    # Plain "*" on one side: only the other side restricts.
    ("0 0 13 * *", utc(2026, 3, 1), days((2026, 3, 13), (2026, 4, 13))),
    ("0 0 * * 5", utc(2026, 3, 1), days((2026, 3, 6), (2026, 3, 13))),
]


@pytest.mark.parametrize(("expression", "after", "expected"), DAY_RULE_CASES,
                         ids=[case[0] for case in DAY_RULE_CASES])
def test_the_day_fields_combine_by_cronies_rule(
    expression: str, after: datetime, expected: list[datetime]
) -> None:
    assert next_run_times(expression, "UTC", after, len(expected)) == expected


@pytest.mark.parametrize(("first", "second"), [
    ("0 9 * * MON-FRI", "0 9 * * 1-5"),
    ("0 9 * * mon-fri", "0 9 * * 1-5"),
    ("0 0 * * 7", "0 0 * * 0"),
    ("0 0 * * SUN", "0 0 * * 0"),
    ("0 0 1 JAN,jul *", "0 0 1 1,7 *"),
    ("0 0 * * 0-7", "0 0 * * *"),
    ("@daily", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("5/15 * * * *", "5-59/15 * * * *"),
    ("0 0 * * 2-2", "0 0 * * 2"),
    ("0 0 1-1 * *", "0 0 1 * *"),
    ("0 0 * * */7", "0 0 * * 0"),
])
def test_equivalent_spellings_fire_at_the_same_times(first: str, second: str) -> None:
    after = utc(2026, 1, 1)
    assert next_run_times(first, "UTC", after, 20) == next_run_times(second, "UTC", after, 20)


REJECTIONS = [
    ("", "expected 5 fields, got 0"),
    ("* * * *", "expected 5 fields, got 4"),
    ("0 * * * * *", "expected 5 fields, got 6"),
    ("0 0 12 * * ? 2026", "expected 5 fields, got 7"),
    ("@reboot", "unsupported macro: @reboot"),
    ("@fortnightly", "unknown macro: @fortnightly"),
    ("@daily 5", "unknown macro: @daily 5"),
    ("61 * * * *", "bad minute field: 61 (minute is 0-59)"),
    ("0,61 * * * *", "bad minute field: 61 (minute is 0-59)"),
    ("-1 * * * *", "bad minute field: -1 (minute is 0-59)"),
    ("*/0 * * * *", "bad minute field: */0 (a step is a whole number of at least 1)"),
    ("*/ * * * *", "bad minute field: */ (a step is a whole number of at least 1)"),
    ("1-2-3 * * * *", "bad minute field: 1-2-3 (minute is 0-59)"),
    ("1,,2 * * * *", "bad minute field: 1,,2 (an empty item in a list)"),
    ("? * * * *", "bad minute field: ? (minute is 0-59)"),
    ("L * * * *", "bad minute field: L (minute is 0-59)"),
    ("\u0661 * * * *", "bad minute field: \u0661 (minute is 0-59)"),  # ARABIC-INDIC DIGIT ONE
    ("0 24 * * *", "bad hour field: 24 (hour is 0-23)"),
    ("0 5-1 * * *", "bad hour field: 5-1 (descending range; for a wrap-around, list both parts)"),
    ("0 0 0 * *", "bad day-of-month field: 0 (day-of-month is 1-31)"),
    ("0 0 32 * *", "bad day-of-month field: 32 (day-of-month is 1-31)"),
    ("0 0 32W * *", "bad day-of-month field: 32W (day-of-month is 1-31)"),
    ("0 0 W * *", "bad day-of-month field: W (day-of-month is 1-31)"),
    ("0 0 1-5W * *", "bad day-of-month field: 1-5W (day-of-month is 1-31)"),
    ("0 0 * 0 *", "bad month field: 0 (month is 1-12 or JAN-DEC)"),
    ("0 0 * 13 *", "bad month field: 13 (month is 1-12 or JAN-DEC)"),
    ("0 0 * FOO *", "bad month field: FOO (month is 1-12 or JAN-DEC)"),
    ("0 0 * * 8",
     "bad day-of-week field: 8 (day-of-week is 0-7 or SUN-SAT; 0 and 7 are Sunday)"),
    ("0 0 * * FRI-MON",
     "bad day-of-week field: FRI-MON (descending range; for a wrap-around, list both parts)"),
    ("0 0 * * 5#6", "bad day-of-week field: 5#6 (the K of D#K is 1-5)"),
    ("0 0 * * 5#0", "bad day-of-week field: 5#0 (the K of D#K is 1-5)"),
    ("0 0 * * L",
     "bad day-of-week field: L (day-of-week is 0-7 or SUN-SAT; 0 and 7 are Sunday)"),
    ("0 0 30 2 *", "never fires: 0 0 30 2 *"),
    ("0 0 31 4 *", "never fires: 0 0 31 4 *"),
    ("0 0 31 2,4,6,9,11 *", "never fires: 0 0 31 2,4,6,9,11 *"),
    ("0 0 30W 2 *", "never fires: 0 0 30W 2 *"),
    ("0 0 30 2 */7", "never fires: 0 0 30 2 */7"),
    ("0 " * 200, "expression too long (max 256 characters)"),
]


@pytest.mark.parametrize(("expression", "message"), REJECTIONS,
                         ids=[row[1] for row in REJECTIONS])
def test_invalid_expressions_are_rejected_with_a_message_naming_the_problem(
    expression: str, message: str
) -> None:
    with pytest.raises(InvalidSchedule) as raised:
        validate_schedule(expression, "UTC")
    assert raised.value.message == message


def test_invalid_schedule_is_a_permanent_value_error() -> None:
    with pytest.raises(ValueError) as raised:
        cron.parse("0 0 30 2 *")
    assert isinstance(raised.value, PermanentError)


def test_a_non_string_expression_is_invalid() -> None:
    with pytest.raises(InvalidSchedule, match="cron expression must be a string"):
        validate_schedule(None, "UTC")  # type: ignore[arg-type]


def test_every_month_shape_occurs_in_the_gregorian_cycle() -> None:
    # can_fire() trusts that each (month, length) pair starts on every weekday somewhere
    # in the 400-year cycle; check that premise by brute force.
    shapes = {
        (month, calendar.monthrange(year, month)[1], date(year, month, 1).weekday())
        for year in range(2000, 2400)
        for month in range(1, 13)
    }
    expected = {
        (month, length, weekday)
        for month, lengths in cron._MONTH_LENGTHS.items()
        for length in lengths
        for weekday in range(7)
    }
    assert shapes == expected


@pytest.mark.parametrize(("expression", "fires"), [
    ("0 0 30 2 *", False),
    ("0 0 31 4 *", False),
    ("0 0 31W 6 *", False),
    ("0 0 30 2 */7", False),
    ("0 0 29 2 *", True),
    ("0 0 * 2 1#5", True),
    ("0 0 30 2 1", True),
    ("0 0 LW 2 *", True),
    ("0 0 */30 2 1", True),
    ("0 0 */2 * 1#5", True),
])
def test_the_never_fires_check_agrees_with_a_search_of_the_whole_400_year_cycle(
    expression: str, fires: bool
) -> None:
    # The calendar repeats every 400 years, so this search is exhaustive.
    spec = cron._compile(expression)
    assert cron.can_fire(spec) is fires
    assert (cron.next_match(spec, datetime(2000, 1, 1), 2399) is not None) is fires


@pytest.mark.parametrize("separator", ["\u00a0", "\u2028", "\u3000", "\u2003", "\u0085"])
def test_fields_are_separated_by_ascii_spaces_and_tabs_only(separator: str) -> None:
    with pytest.raises(InvalidSchedule, match="expected 5 fields, got 4"):
        cron.parse(f"0{separator}0 * * *")
    assert cron.parse("0\t0  * *\t*").text == "0 0 * * *"


def test_nw_stands_alone_in_its_field() -> None:
    with pytest.raises(InvalidSchedule, match=r"bad day-of-month field: 15W,16 \(NW stands "
                                              r"alone in the day-of-month field\)"):
        cron.parse("0 0 15W,16 * *")
    assert cron.parse("0 0 15W * *").days.dom_nearest == frozenset({15})


def test_the_last_weekday_form_takes_a_number_only() -> None:
    with pytest.raises(InvalidSchedule,
                       match=r"bad day-of-week field: MONL \(the D of DL is a number 0-7\)"):
        cron.parse("0 0 * * MONL")
    # 5L: the last Friday of each month.
    assert next_run_times("0 0 * * 5L", "UTC", utc(2026, 1, 1), 2) == [
        utc(2026, 1, 30), utc(2026, 2, 27)]


def test_31w_does_not_fire_in_a_month_of_30_days() -> None:
    # Quartz's rule, kept: April 2026 has 30 days, so after March 31 (a Tuesday) the
    # next is May 29 (May 31 is a Sunday: the nearest weekday within May, Friday 29th).
    assert next_run_times("0 9 31W * *", "UTC", utc(2026, 3, 30), 2) == [
        utc(2026, 3, 31, 9), utc(2026, 5, 29, 9)]


@pytest.mark.parametrize(("zone", "after"), [
    ("UTC", datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
    ("Pacific/Kiritimati", datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
    ("Etc/GMT+12", datetime(1, 1, 1, 0, 0, tzinfo=UTC)),
])
def test_the_end_of_the_calendar_is_a_schedule_error_not_an_overflow(
    zone: str, after: datetime
) -> None:
    with pytest.raises(InvalidSchedule, match=r"no fire time within the calendar's range"):
        next_run_times("0 0 1 1 *", zone, after, 1)
