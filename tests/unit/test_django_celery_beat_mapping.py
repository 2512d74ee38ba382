"""django-celery-beat's periodic task rows as trigger definitions (pure, fixed NOW)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from app.importing.django_celery_beat import map_periodic_task, map_periodic_tasks
from app.importing.entries import Mapped

NOW = dt.datetime(2030, 3, 10, 12, 0, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def row(**fields: Any) -> dict[str, Any]:
    """A periodic task row as the reader gives it: django-celery-beat's defaults."""
    base: dict[str, Any] = {
        "name": "job", "task": "shop.job", "args": "[]", "kwargs": "{}", "queue": None,
        "exchange": None, "routing_key": None, "headers": "{}", "priority": None,
        "expires": None, "expire_seconds": None, "one_off": False, "start_time": None,
        "enabled": True, "description": "", "crontab": None, "interval": None,
        "clocked": None, "solar": None}
    return {**base, **fields}


def cron(**fields: str) -> dict[str, Any]:
    return {"minute": "*", "hour": "*", "day_of_week": "*", "day_of_month": "*",
            "month_of_year": "*", "timezone": "UTC", **fields}


def definition(**fields: Any) -> dict[str, Any]:
    return {"name": "job", "target": {"kind": "task", "task_name": "shop.job"},
            "description": "imported from django-celery-beat periodic task 'job'", **fields}


@pytest.mark.parametrize(("crontab", "expression"), [
    (cron(minute="*/15"), "0,15,30,45 * * * *"),
    (cron(minute="30", hour="8-17/3", day_of_week="mon-fri"), "30 8,11,14,17 * * 1-5"),
    (cron(minute="0", hour="0", day_of_week="sat,sun"), "0 0 * * 0,6"),
    (cron(minute="0", hour="6", month_of_year="jan-mar"), "0 6 * 1-3 *"),
    (cron(minute="5", hour="4", day_of_month="1,15"), "5 4 1,15 * *"),
    (cron(minute="0", hour="*/6", day_of_week="0"), "0 0,6,12,18 * * 0"),
])
def test_a_crontab_is_read_by_celery_and_becomes_cron_in_its_own_zone(
        crontab: dict[str, Any], expression: str) -> None:
    zoned = {**crontab, "timezone": "America/New_York"}
    assert map_periodic_task(row(crontab=zoned), NOW) == Mapped("job", definition(
        cron_expression=expression, timezone="America/New_York"))


@pytest.mark.parametrize(("crontab", "reason"), [
    (cron(minute="61"), "celery cannot read its crontab: Invalid end range: 61 > 59."),
    (cron(day_of_week="7"), "celery cannot read its crontab: Invalid end range: 7 > 6."),
    (cron(minute=""), "celery cannot read its crontab: empty part"),
    (cron(minute="0", day_of_month="13", day_of_week="fri"),
     "day_of_month and day_of_week are both restricted: celery beat runs on days that"
     " match both, cron on days that match either"),
])
def test_a_crontab_celery_cannot_read_or_cron_cannot_say_is_refused(
        crontab: dict[str, Any], reason: str) -> None:
    assert map_periodic_task(row(crontab=crontab), NOW) == Mapped("job", refused=reason)


@pytest.mark.parametrize(("every", "period", "seconds"), [
    (2, "days", 172_800), (3, "hours", 10_800), (5, "minutes", 300), (90, "seconds", 90),
    (2_000_000, "microseconds", 2),
])
def test_an_interval_is_every_times_its_period_in_seconds(
        every: int, period: str, seconds: int) -> None:
    mapped = map_periodic_task(row(interval={"every": every, "period": period}), NOW)
    assert mapped == Mapped("job", definition(interval_s=seconds, timezone="UTC"))


@pytest.mark.parametrize(("interval", "reason"), [
    ({"every": 500, "period": "microseconds"},
     "every 0.0005 s: an interval is whole seconds from 1 to 31622400"),
    ({"every": 400, "period": "days"},
     "every 34560000 s: an interval is whole seconds from 1 to 31622400"),
    ({"every": 1, "period": "weeks"},
     "its interval's period 'weeks' is none of days, hours, minutes, seconds, microseconds"),
])
def test_an_interval_that_is_not_whole_seconds_in_range_is_refused(
        interval: dict[str, Any], reason: str) -> None:
    assert map_periodic_task(row(interval=interval), NOW) == Mapped("job", refused=reason)


def test_an_intervals_start_time_is_its_anchor_rounded_up_to_the_second() -> None:
    start = dt.datetime(2030, 3, 1, 8, 0, 0, 250_000, tzinfo=dt.timezone(HOUR))
    mapped = map_periodic_task(
        row(interval={"every": 1, "period": "hours"}, start_time=start), NOW)
    assert mapped.definition == definition(
        interval_s=3600, timezone="UTC", start_at="2030-03-01T07:00:01+00:00")
    exact = start.replace(microsecond=0)
    assert map_periodic_task(row(interval={"every": 1, "period": "hours"},
                                 start_time=exact), NOW).definition["start_at"] == (
        "2030-03-01T07:00:00+00:00")


def test_a_crontabs_start_time_ahead_is_left_out_with_a_note_and_one_past_silently() -> None:
    ahead = map_periodic_task(row(crontab=cron(minute="0"), start_time=NOW + HOUR), NOW)
    assert ahead.notes == ("start_time 2030-03-10T13:00:00+00:00 left out: it runs from"
                           " its next match after the import",)
    assert "start_time" not in ahead.definition
    assert map_periodic_task(row(crontab=cron(minute="0"), start_time=NOW - HOUR),
                             NOW).notes == ()


def test_a_clocked_task_is_a_one_time_trigger_at_its_instant_in_utc() -> None:
    at = dt.datetime(2030, 4, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    mapped = map_periodic_task(row(one_off=True, clocked={"clocked_time": at}), NOW)
    assert mapped == Mapped("job", definition(run_at="2030-04-01T07:30:00+00:00",
                                              timezone="UTC"))


def test_a_clocked_task_waits_for_a_later_start_time_as_beat_does() -> None:
    mapped = map_periodic_task(row(one_off=True, clocked={"clocked_time": NOW + HOUR},
                                   start_time=NOW + 2 * HOUR), NOW)
    assert mapped.definition["run_at"] == "2030-03-10T14:00:00+00:00"
    assert mapped.notes == ("runs at its start_time 2030-03-10T14:00:00+00:00, after its"
                            " clocked time",)


@pytest.mark.parametrize("at", [NOW, NOW - dt.timedelta(seconds=1), NOW - 30 * HOUR])
def test_a_clocked_task_at_or_before_now_is_refused_as_already_past(at: dt.datetime) -> None:
    mapped = map_periodic_task(row(one_off=True, clocked={"clocked_time": at}), NOW)
    assert mapped == Mapped("job", refused=f"its clocked time {at.isoformat()} is already"
                            " past (a one-time trigger must lie ahead; nothing fires late)")


def test_solar_is_refused_by_name() -> None:
    solar = {"event": "sunset", "latitude": 52.5, "longitude": 13.4}
    assert map_periodic_task(row(name="lights", solar=solar), NOW) == Mapped(
        "lights", refused="solar schedules are not supported")


@pytest.mark.parametrize(("schedule", "kind"), [
    ({"crontab": cron(minute="0")}, "crontab"),
    ({"interval": {"every": 1, "period": "hours"}}, "interval"),
])
def test_one_off_with_a_recurring_schedule_is_refused(schedule: dict[str, Any],
                                                       kind: str) -> None:
    assert map_periodic_task(row(one_off=True, **schedule), NOW) == Mapped(
        "job", refused=f"one_off with a {kind} schedule is not supported: a one-time"
        " trigger runs at a fixed instant (a clocked schedule)")


def test_a_task_without_a_schedule_or_with_two_is_refused() -> None:
    assert map_periodic_task(row(), NOW).refused == "it has no schedule"
    assert map_periodic_task(row(crontab=cron(), interval={"every": 1, "period": "hours"}),
                             NOW).refused == "it has more than one schedule (crontab, interval)"


def test_a_disabled_task_is_created_paused() -> None:
    mapped = map_periodic_task(row(crontab=cron(minute="0"), enabled=False), NOW)
    assert mapped.definition == definition(cron_expression="0 * * * *", timezone="UTC",
                                           enabled=False)


def test_args_kwargs_and_queue_carry_over() -> None:
    mapped = map_periodic_task(row(crontab=cron(minute="0"), args='[1, "a", null]',
                                   kwargs='{"to": ["x@example.com"]}', queue="reports"),
                               NOW)
    assert mapped.definition["target"] == {
        "kind": "task", "task_name": "shop.job", "args": [1, "a", None],
        "kwargs": {"to": ["x@example.com"]}, "queue": "reports"}


@pytest.mark.parametrize(("fields", "reason"), [
    ({"args": "[1, 2"}, "its args are not JSON (Expecting ',' delimiter: line 1 column 6"
                        " (char 5))"),
    ({"kwargs": "{'a': 1}"}, "its kwargs are not JSON (Expecting property name enclosed in"
                             " double quotes: line 1 column 2 (char 1))"),
    ({"args": '{"a": 1}'}, "its args are not a JSON array"),
    ({"kwargs": "[1]"}, "its kwargs are not a JSON object"),
])
def test_arguments_that_are_not_json_of_their_kind_are_refused_with_the_reason(
        fields: dict[str, str], reason: str) -> None:
    assert map_periodic_task(row(crontab=cron(), **fields), NOW) == Mapped(
        "job", refused=reason)


def test_empty_argument_text_is_no_arguments() -> None:
    mapped = map_periodic_task(row(crontab=cron(), args="", kwargs=None), NOW)
    assert mapped.definition["target"] == {"kind": "task", "task_name": "shop.job"}


def test_an_expiry_already_past_is_refused() -> None:
    mapped = map_periodic_task(row(crontab=cron(), expires=NOW), NOW)
    assert mapped.refused == "it expired at 2030-03-10T12:00:00+00:00 (beat runs it no more)"


def test_a_recurring_tasks_expiry_ahead_is_left_out_with_a_note() -> None:
    mapped = map_periodic_task(row(crontab=cron(minute="0"), expires=NOW + HOUR), NOW)
    assert mapped.definition == definition(cron_expression="0 * * * *", timezone="UTC")
    assert mapped.notes == ("expires at 2030-03-10T13:00:00+00:00 left out: a trigger has"
                            " no end date (pause or delete it then)",)


def test_a_one_time_tasks_expiry_is_its_misfire_grace() -> None:
    mapped = map_periodic_task(row(one_off=True, clocked={"clocked_time": NOW + HOUR},
                                   expires=NOW + 3 * HOUR), NOW)
    assert (mapped.definition["misfire_grace_s"], mapped.definition["misfire_policy"]) == (
        7200, "skip")
    assert mapped.notes == ("expires at 2030-03-10T15:00:00+00:00: a run that cannot start"
                            " within 7200 s is recorded missed (misfire_grace_s, skip)",)


def test_a_one_time_task_that_expires_before_its_instant_is_refused() -> None:
    mapped = map_periodic_task(row(one_off=True, clocked={"clocked_time": NOW + 2 * HOUR},
                                   expires=NOW + HOUR), NOW)
    assert mapped.refused == ("it expires at 2030-03-10T13:00:00+00:00, before its clocked"
                              " time (beat would never run it)")


def test_expire_seconds_is_a_misfire_grace_capped_at_a_week() -> None:
    mapped = map_periodic_task(row(crontab=cron(), expire_seconds=45), NOW)
    assert (mapped.definition["misfire_grace_s"], mapped.notes) == (45, (
        "expire_seconds 45: a run that cannot start within 45 s is recorded missed"
        " (misfire_grace_s, skip)",))
    capped = map_periodic_task(row(crontab=cron(), expire_seconds=10**7), NOW)
    assert capped.definition["misfire_grace_s"] == 604_800


def test_routing_options_and_headers_are_left_out_with_a_note() -> None:
    mapped = map_periodic_task(row(crontab=cron(), exchange="ex", routing_key="rk",
                                   priority=3, headers='{"h": 1}'), NOW)
    assert mapped.notes == ("options left out: exchange, headers, priority, routing_key",)
    assert map_periodic_task(row(crontab=cron(), headers=None), NOW).notes == ()


def test_the_tasks_description_carries_over_cut_to_2000_characters() -> None:
    mapped = map_periodic_task(row(crontab=cron(), description="x" * 2100), NOW)
    assert mapped.definition["description"] == "x" * 2000


def test_names_become_trigger_names_and_a_taken_one_is_refused_the_second_time() -> None:
    mapped = map_periodic_tasks([row(name="nightly report", crontab=cron()),
                                 row(name="nightly/report", crontab=cron()),
                                 row(name="!!!", crontab=cron())], NOW)
    assert [(one.entry, one.definition and one.definition["name"], one.notes, one.refused)
            for one in mapped] == [
        ("nightly report", "nightly-report", ("named 'nightly-report'",), None),
        ("nightly/report", None, (), "its name 'nightly-report' is another entry's too"),
        ("!!!", None, (), "its name has none of A-Z a-z 0-9 . _ -"),
    ]
