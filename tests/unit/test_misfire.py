"""Misfire decisions and occurrence planning: pure, with a fixed NOW."""

from __future__ import annotations

import datetime as dt

import pytest

from app.enums import InvocationStatus, MisfirePolicy
from app.schedule.kinds import Cron, Once
from app.schedule.occurrences import (
    MAX_CATCH_UP_RUNS,
    MAX_MISSED_ROWS,
    Occurrence,
    decide,
    fold_missed,
    plan_trigger,
)

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
RUN = InvocationStatus.PENDING
MISS = InvocationStatus.MISSED


def hours_ago(*hours: float) -> list[dt.datetime]:
    return [NOW.replace(second=0) - dt.timedelta(hours=h) for h in hours]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (MisfirePolicy.RUN_ONCE, [MISS, MISS, RUN]),
        (MisfirePolicy.RUN_ALL, [RUN, RUN, RUN]),
        (MisfirePolicy.SKIP, [MISS, MISS, MISS]),
    ],
)
def test_three_hours_down_with_an_hourly_trigger_follows_the_policy(
    policy: MisfirePolicy, expected: list[InvocationStatus]
) -> None:
    due = hours_ago(2, 1, 0.5)
    decided = decide(due, exhausted=True, now=NOW, policy=policy, grace_s=60)
    assert [o.scheduled_for for o in decided] == due
    assert [o.status for o in decided] == expected


@pytest.mark.parametrize("policy", list(MisfirePolicy))
def test_an_occurrence_within_its_grace_always_runs(policy: MisfirePolicy) -> None:
    due = [NOW - dt.timedelta(seconds=30)]
    decided = decide(due, exhausted=True, now=NOW, policy=policy, grace_s=60)
    assert [o.status for o in decided] == [RUN]


def test_run_once_misses_late_occurrences_that_are_followed_by_an_on_time_one() -> None:
    due = [NOW - dt.timedelta(minutes=m) for m in (10, 9, 1)]
    decided = decide(due, exhausted=True, now=NOW, policy=MisfirePolicy.RUN_ONCE, grace_s=300)
    assert [o.status for o in decided] == [MISS, MISS, RUN]


def test_run_all_replays_only_the_latest_hundred_and_records_the_rest_missed() -> None:
    due = [NOW - dt.timedelta(minutes=m) for m in range(150, 0, -1)]
    decided = decide(due, exhausted=True, now=NOW, policy=MisfirePolicy.RUN_ALL, grace_s=0)
    statuses = [o.status for o in decided]
    assert statuses == [MISS] * 50 + [RUN] * MAX_CATCH_UP_RUNS


def test_a_cut_short_list_decides_only_what_it_can_know() -> None:
    due = [NOW - dt.timedelta(minutes=m) for m in range(300, 0, -1)]
    decided = decide(
        due[:110], exhausted=False, now=NOW, policy=MisfirePolicy.RUN_ONCE, grace_s=0, limit=10
    )
    assert [o.status for o in decided] == [MISS] * 10


def test_a_cut_short_list_that_is_too_short_is_a_programmer_error() -> None:
    with pytest.raises(ValueError, match="limit"):
        decide(hours_ago(2, 1), exhausted=False, now=NOW, policy=MisfirePolicy.SKIP,
               grace_s=0, limit=1)


def test_an_hourly_trigger_three_hours_behind_plans_three_occurrences_and_the_next_hour() -> None:
    plan = plan_trigger(
        schedule=Cron("0 * * * *", "UTC"),
        stored_next_run_at=dt.datetime(2026, 6, 1, 10, 0, tzinfo=UTC),
        policy=MisfirePolicy.RUN_ONCE,
        grace_s=60,
        now=NOW,
    )
    assert [(o.scheduled_for, o.status) for o in plan.occurrences] == [
        (dt.datetime(2026, 6, 1, 10, 0, tzinfo=UTC), MISS),
        (dt.datetime(2026, 6, 1, 11, 0, tzinfo=UTC), MISS),
        (dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC), RUN),
    ]
    assert plan.next_run_at == dt.datetime(2026, 6, 1, 13, 0, tzinfo=UTC)


def test_a_hand_edited_next_run_at_snaps_to_the_schedules_next_real_occurrence() -> None:
    plan = plan_trigger(
        schedule=Cron("0 * * * *", "UTC"),
        stored_next_run_at=dt.datetime(2026, 6, 1, 11, 17, 30, tzinfo=UTC),
        policy=MisfirePolicy.RUN_ALL,
        grace_s=60,
        now=NOW,
    )
    assert [o.scheduled_for for o in plan.occurrences] == [
        dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    ]
    assert plan.next_run_at == dt.datetime(2026, 6, 1, 13, 0, tzinfo=UTC)


def test_a_daily_job_advances_by_the_local_calendar_day_across_spring_forward() -> None:
    # America/New_York, 2026-03-08: 02:00 EST -> 03:00 EDT. 02:30 falls in the gap and
    # fires at the transition (07:00Z); the next day's 02:30 EDT is 06:30Z.
    plan = plan_trigger(
        schedule=Cron("30 2 * * *", "America/New_York"),
        stored_next_run_at=dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC),
        policy=MisfirePolicy.RUN_ONCE,
        grace_s=300,
        now=dt.datetime(2026, 3, 8, 7, 0, 5, tzinfo=UTC),
    )
    assert [(o.scheduled_for, o.status) for o in plan.occurrences] == [
        (dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC), RUN)
    ]
    assert plan.next_run_at == dt.datetime(2026, 3, 9, 6, 30, tzinfo=UTC)


def test_a_one_time_trigger_has_one_occurrence_and_then_finishes() -> None:
    run_at = dt.datetime(2026, 6, 1, 11, 0, 0, 123000, tzinfo=UTC)
    plan = plan_trigger(schedule=Once(run_at), stored_next_run_at=run_at,
                        policy=MisfirePolicy.SKIP, grace_s=60, now=NOW)
    assert [(o.scheduled_for, o.status) for o in plan.occurrences] == [(run_at, MISS)]
    assert plan.finished


def test_a_minutely_trigger_a_month_behind_is_recorded_in_bounded_chunks() -> None:
    plan = plan_trigger(
        schedule=Cron("* * * * *", "UTC"),
        stored_next_run_at=NOW.replace(second=0) - dt.timedelta(days=30),
        policy=MisfirePolicy.RUN_ONCE,
        grace_s=60,
        now=NOW,
        limit=1000,
        missed_reason="missed: late",
    )
    start = NOW.replace(second=0) - dt.timedelta(days=30)
    last = start + dt.timedelta(minutes=999)
    # More are due after this chunk, so all 1,000 are older than what follows: one row.
    assert plan.occurrences == [Occurrence(last, MISS, (
        f"missed: late (this row stands for 1000 missed occurrences from "
        f"{start.isoformat()} to {last.isoformat()})"))]
    assert plan.next_run_at == start + dt.timedelta(minutes=1000)


def test_the_last_chunk_of_a_backlog_keeps_the_latest_missed_rows_and_folds_the_rest() -> None:
    start = NOW.replace(second=0) - dt.timedelta(minutes=300)
    plan = plan_trigger(schedule=Cron("* * * * *", "UTC"), stored_next_run_at=start,
                        policy=MisfirePolicy.RUN_ONCE, grace_s=60, now=NOW,
                        missed_reason="missed: late")
    # 301 due: the latest runs, the 100 before it keep a row each, 200 fold into one.
    assert len(plan.occurrences) == 1 + MAX_MISSED_ROWS + 1
    summary, *kept, run = plan.occurrences
    assert (summary.scheduled_for, summary.status) == (start + dt.timedelta(minutes=199), MISS)
    assert summary.reason == (
        f"missed: late (this row stands for 200 missed occurrences from {start.isoformat()} "
        f"to {(start + dt.timedelta(minutes=199)).isoformat()})")
    assert [o.scheduled_for for o in kept] == [
        start + dt.timedelta(minutes=200 + i) for i in range(MAX_MISSED_ROWS)]
    assert {(o.status, o.reason) for o in kept} == {(MISS, None)}
    assert (run.scheduled_for, run.status) == (start + dt.timedelta(minutes=300), RUN)


def test_a_few_missed_occurrences_are_not_folded() -> None:
    rows = [Occurrence(NOW - dt.timedelta(minutes=i), MISS) for i in (3, 2, 1)]
    assert fold_missed(rows, "missed", complete=True) == rows
