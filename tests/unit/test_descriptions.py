"""Schedule descriptions say what the engine does, day rule included."""

from __future__ import annotations

import datetime as dt

import pytest

from app.schedule.descriptions import describe_cron
from app.schedule.scheduling import next_run_times

AFTER = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def _runs(expression: str, count: int = 40) -> list[dt.datetime]:
    return next_run_times(expression, "UTC", AFTER, count)


@pytest.mark.parametrize(
    ("expression", "description"),
    [
        ("0 0 */2 * 1",
         "At 12:00 AM, every 2 days of the month from the 1st, and only on Monday"),
        ("0 0 13 * 5", "At 12:00 AM, on day 13 of the month, or on Friday"),
        ("0 0 1,15 * 1-5",
         "At 12:00 AM, on day 1 and 15 of the month, or on Monday through Friday"),
        ("0 0 L * 5", "At 12:00 AM, on the last day of the month, or on Friday"),
        ("30 2 */2 * *", "At 02:30 AM, every 2 days of the month from the 1st"),
        ("0 0 * * 1", "At 12:00 AM, only on Monday"),
        ("0 9 * * 1-5", "At 09:00 AM, Monday through Friday"),
        ("0 0 * * 5#2", "At 12:00 AM, on the second Friday of the month"),
        ("*/15 * * * *", "Every 15 minutes"),
        ("@daily", "At 12:00 AM"),
    ],
)
def test_a_description_follows_the_engine_s_day_rule(expression: str, description: str) -> None:
    assert describe_cron(expression) == description


def test_and_descriptions_match_the_runs_the_engine_computes() -> None:
    # "and only on Monday": every run is a Monday on an odd day of the month.
    runs = _runs("0 0 */2 * 1")
    assert all(run.weekday() == 0 and run.day % 2 == 1 for run in runs)
    # Without the rule's "and", Mondays on even days (the 8th of June 2026) would fire.
    assert dt.datetime(2026, 6, 8, tzinfo=dt.UTC) not in runs
    assert runs[:2] == [dt.datetime(2026, 6, 15, tzinfo=dt.UTC),
                        dt.datetime(2026, 6, 29, tzinfo=dt.UTC)]


def test_or_descriptions_match_the_runs_the_engine_computes() -> None:
    # "or on Monday through Friday": weekdays fire, and the 1st and 15th on any day.
    runs = _runs("0 0 1,15 * 1-5", count=60)
    assert all(run.weekday() < 5 or run.day in (1, 15) for run in runs)
    weekend_by_day = [run for run in runs if run.weekday() >= 5]
    assert weekend_by_day and all(run.day in (1, 15) for run in weekend_by_day)
    weekdays_by_weekday = [run for run in runs if run.day not in (1, 15)]
    assert weekdays_by_weekday and all(run.weekday() < 5 for run in weekdays_by_weekday)


def test_every_other_day_of_the_month_fires_on_the_31st_and_the_1st() -> None:
    runs = next_run_times("30 2 */2 * *", "UTC", dt.datetime(2026, 7, 28, tzinfo=dt.UTC), 3)
    assert [run.day for run in runs] == [29, 31, 1]


def test_an_expression_that_does_not_parse_is_shown_as_it_is() -> None:
    assert describe_cron("not a cron") == "not a cron"
