"""Interval schedules (app.schedule.kinds.Interval): absolute time from the anchor,
exact UTC instants, across a DST transition, and the misfire rules applied to them."""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo

import pytest

from app.enums import InvocationStatus, MisfirePolicy
from app.schedule.kinds import Interval, period_words, schedule_of
from app.schedule.occurrences import plan_trigger

UTC = dt.UTC
#: Europe/Berlin leaves summer time at 01:00 UTC on 2026-10-25 (03:00 CEST -> 02:00 CET)
#: and starts it at 01:00 UTC on 2026-03-29: anchors an hour before each.
BEFORE_FALL = dt.datetime(2026, 10, 25, 0, 0, 0, tzinfo=UTC)
BEFORE_SPRING = dt.datetime(2026, 3, 29, 0, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("every_s", [1, 7, 90, 3600, 86_400])
@pytest.mark.parametrize("anchor", [BEFORE_FALL, BEFORE_SPRING])
def test_a_thousand_occurrences_fall_exactly_every_interval_s_in_absolute_time(
    every_s: int, anchor: dt.datetime,
) -> None:
    schedule = Interval(every_s, anchor)
    found = [anchor]
    while len(found) < 1000:
        found.append(schedule.next_after(found[-1]))
    # No drift: the 1,000th occurrence is exactly 999 periods after the anchor, and so is
    # the closed form counted from any instant in between.
    assert found[-1] == anchor + dt.timedelta(seconds=999 * every_s)
    assert all(b - a == dt.timedelta(seconds=every_s) for a, b in itertools.pairwise(found))
    middle = found[500] + dt.timedelta(microseconds=1)
    assert schedule.next_after(middle) == found[501]
    assert schedule.times(found[10] - dt.timedelta(seconds=1), 3) == found[10:13]


def test_an_hourly_interval_is_not_moved_by_a_dst_transition() -> None:
    # Every 3,600 s in absolute time: over Berlin's fall-back night it fires in both
    # passes of the repeated hour (02:00 CEST, then 02:00 CET), where cron's "0 2 * * *"
    # fires once.
    hourly = Interval(3600, BEFORE_FALL)
    instants = [BEFORE_FALL, *hourly.times(BEFORE_FALL, 3)]
    assert instants == [dt.datetime(2026, 10, 25, hour, tzinfo=UTC) for hour in (0, 1, 2, 3)]
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    assert [moment.astimezone(berlin).isoformat() for moment in instants] == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00", "2026-10-25T04:00:00+01:00"]
    # And over the spring-forward night, one hour apart though the wall clock jumps two.
    spring = [BEFORE_SPRING, *Interval(3600, BEFORE_SPRING).times(BEFORE_SPRING, 1)]
    assert [moment.astimezone(berlin).isoformat() for moment in spring] == [
        "2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00"]


def test_occurrences_count_from_the_anchor_not_from_when_they_were_asked() -> None:
    schedule = Interval(90, dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC))
    # Before the anchor: the anchor. After: the next anchor + k * 90 s.
    assert schedule.next_after(dt.datetime(2026, 6, 1, 11, 0, tzinfo=UTC)) == (
        dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC))
    assert schedule.next_after(dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)) == (
        dt.datetime(2026, 6, 1, 12, 1, 30, tzinfo=UTC))
    assert schedule.next_after(dt.datetime(2026, 6, 1, 12, 7, 31, 5, tzinfo=UTC)) == (
        dt.datetime(2026, 6, 1, 12, 9, 0, tzinfo=UTC))
    # Saved at the anchor (the default anchor is the save): the first run is one period on.
    assert schedule.first_for_save(dt.datetime(2026, 6, 1, 12, 0, 0, 400, tzinfo=UTC)) == (
        dt.datetime(2026, 6, 1, 12, 1, 30, tzinfo=UTC))
    # Near the end of the calendar: no occurrence left, not an error.
    late = Interval(86_400 * 366, dt.datetime(8999, 6, 1, tzinfo=UTC))
    assert late.next_after(dt.datetime(8999, 6, 1, tzinfo=UTC)) is None


def test_the_columns_name_an_interval_and_its_words() -> None:
    anchor = dt.datetime(2026, 6, 1, 12, tzinfo=UTC)
    row = {"run_at": None, "cron_expression": None, "timezone": "UTC", "interval_s": 90,
           "start_at": anchor}
    assert schedule_of(row) == Interval(90, anchor)
    assert (Interval.kind, Interval.field, Interval.pausable) == ("interval", "interval_s", True)
    assert Interval(90, anchor).describe("Europe/Paris") == "Every 90 seconds"
    assert [period_words(s) for s in (1, 7, 60, 300, 3600, 5400, 86_400, 172_800)] == [
        "second", "7 seconds", "minute", "5 minutes", "hour", "90 minutes", "day", "2 days"]


def test_run_once_after_an_outage_runs_the_latest_and_records_the_rest_missed() -> None:
    anchor = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
    schedule = Interval(90, anchor)
    # Down from 12:00 to 12:10:05: the occurrences at 12:00, 12:01:30, ..., 12:09:00 are
    # due; the grace is 60 s, so only 12:09:00 is on time and it runs.
    now = dt.datetime(2026, 6, 1, 12, 10, 5, tzinfo=UTC)
    plan = plan_trigger(schedule=schedule, stored_next_run_at=anchor,
                        policy=MisfirePolicy.RUN_ONCE, grace_s=60, now=now)
    expected = [anchor + dt.timedelta(seconds=90 * k) for k in range(7)]
    assert [(o.scheduled_for, o.status) for o in plan.occurrences] == [
        *[(moment, InvocationStatus.MISSED) for moment in expected[:-1]],
        (expected[-1], InvocationStatus.PENDING),
    ]
    assert plan.next_run_at == dt.datetime(2026, 6, 1, 12, 10, 30, tzinfo=UTC)
    # Skip records all seven missed when none is on time.
    late = dt.datetime(2026, 6, 1, 12, 10, 29, tzinfo=UTC)
    plan = plan_trigger(schedule=schedule, stored_next_run_at=anchor,
                        policy=MisfirePolicy.SKIP, grace_s=10, now=late)
    assert [o.status for o in plan.occurrences] == [InvocationStatus.MISSED] * 7
