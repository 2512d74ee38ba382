"""The history's maintenance on a database of its own, with fixed day partitions.

Retention 3 days at 2026-03-10 12:00 UTC keeps 2026-03-07 onwards. The history:

* 03-01 (no partition: the default partition): A failed once;
* 03-04: A succeeded 3 times (first attempts 1, 2 and 4 s late) and failed once, B missed twice;
* 03-05: A succeeded twice and has one run still running (a long retry);
* 03-06: B succeeded once (10 s late) and was cancelled once;
* 03-08: A succeeded once (kept).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, insert, literal, select, text, update

from app.enums import InvocationStatus
from app.history import partitions
from app.history.retention import maintain
from app.history.stats import trigger_stats
from app.models import (
    Alert,
    AlertRule,
    HistoryState,
    Invocation,
    InvocationAttempt,
    Trigger,
    TriggerAlertState,
    TriggerDayStats,
)
from app.queries.locks import HISTORY_NAMESPACE
from tests.conftest import Services

UTC = dt.UTC
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
A, B = uuid.UUID(int=0xA), uuid.UUID(int=0xB)


def _day(day: int) -> dt.date:
    return dt.date(2026, 3, day)


@pytest.fixture
def history_db(test_services: Services) -> Iterator[Engine]:
    engine = create_engine(test_services.url(test_services.new_database()))
    try:
        yield engine
    finally:
        engine.dispose()


def _run(conn: Any, trigger_id: uuid.UUID, day: int, minute: int, status: InvocationStatus,
         late_s: float | None = None) -> None:
    scheduled_for = dt.datetime(2026, 3, day, 8, minute, tzinfo=UTC)
    invocation_id = conn.execute(insert(Invocation).values(
        trigger_id=trigger_id, tenant_id="t1", project_id="p1", scheduled_for=scheduled_for,
        status=status, attempt=0 if late_s is None else 1,
    ).returning(Invocation.id)).scalar_one()
    if late_s is not None:
        conn.execute(insert(InvocationAttempt).values(
            invocation_id=invocation_id, scheduled_for=scheduled_for, number=1,
            started_at=scheduled_for + dt.timedelta(seconds=late_s)))


def _history(engine: Engine) -> None:
    S = InvocationStatus
    with engine.begin() as conn:
        for day in (4, 5, 6, 8):
            assert partitions.add_day(conn, _day(day))
        _run(conn, A, 1, 0, S.FAILED, 3)
        for minute, late_s in enumerate((1, 2, 4)):
            _run(conn, A, 4, minute, S.SUCCEEDED, late_s)
        _run(conn, A, 4, 10, S.FAILED, 30)
        _run(conn, B, 4, 0, S.MISSED)
        _run(conn, B, 4, 1, S.MISSED)
        _run(conn, A, 5, 0, S.SUCCEEDED, 1)
        _run(conn, A, 5, 1, S.SUCCEEDED, 1)
        _run(conn, A, 5, 2, S.RUNNING, 1)
        _run(conn, B, 6, 0, S.SUCCEEDED, 10)
        _run(conn, B, 6, 1, S.CANCELLED)
        _run(conn, A, 8, 0, S.SUCCEEDED, 5)


def _rollups(engine: Engine) -> dict[tuple[uuid.UUID, dt.date], dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(TriggerDayStats)).mappings().all()
    return {
        (row["trigger_id"], row["day"]): {
            key: row[key] for key in ("succeeded", "failed", "missed", "cancelled", "running",
                                      "lateness_p50_s", "lateness_p95_s")
            if row[key]
        }
        for row in rows
    }


def _rows_by_day(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            str(day): count for day, count in conn.execute(text(
                "SELECT (scheduled_for AT TIME ZONE 'UTC')::date, count(*) FROM invocations"
                " GROUP BY 1 ORDER BY 1")).all()
        }


def test_maintenance_drops_only_expired_finished_days_after_rolling_them_up(
    history_db: Engine,
) -> None:
    _history(history_db)
    report = maintain(history_db, now=NOW, retention_days=3)

    assert report.dropped == [_day(4), _day(6)]
    assert report.kept_back == [_day(5)]
    # 03-01 (default partition, deleted) 1 + 03-04: 6 + 03-06: 2.
    assert report.rows_dropped == 9
    assert report.added == [_day(9), _day(10), _day(11), _day(12), _day(13)]
    assert report.rolled_up == [_day(7), _day(8), _day(9)]
    with history_db.connect() as conn:
        days = partitions.existing_days(conn)
        attempts_left = conn.execute(select(func.count()).select_from(InvocationAttempt)).scalar()
        state = conn.execute(select(HistoryState)).mappings().one()
    assert [d for d in days if d.year == 2026 and d.month == 3] == [
        _day(5), _day(8), _day(9), _day(10), _day(11), _day(12), _day(13)]
    assert _rows_by_day(history_db) == {"2026-03-05": 3, "2026-03-08": 1}
    assert attempts_left == 4
    assert (state["rows_dropped"], state["partitions_dropped"], state["rolled_up_through"]) == (
        9, 2, _day(9))
    assert _rollups(history_db) == {
        (A, _day(1)): {"failed": 1, "lateness_p50_s": 3.0, "lateness_p95_s": 3.0},
        # percentile_cont over 1, 2, 4, 30 s: p50 = 3.0, p95 = 4 + 0.85 * 26.
        (A, _day(4)): {"succeeded": 3, "failed": 1, "lateness_p50_s": 3.0,
                       "lateness_p95_s": pytest.approx(26.1)},
        (B, _day(4)): {"missed": 2},
        (B, _day(6)): {"succeeded": 1, "cancelled": 1, "lateness_p50_s": 10.0,
                       "lateness_p95_s": 10.0},
        (A, _day(8)): {"succeeded": 1, "lateness_p50_s": 5.0, "lateness_p95_s": 5.0},
    }

    # The long retry finishes: the next run drops its day too, with final rollups.
    with history_db.begin() as conn:
        conn.execute(update(Invocation).where(Invocation.status == InvocationStatus.RUNNING)
                     .values(status=InvocationStatus.SUCCEEDED))
    again = maintain(history_db, now=NOW + dt.timedelta(minutes=15), retention_days=3)
    assert (again.dropped, again.kept_back, again.rows_dropped, again.added) == (
        [_day(5)], [], 3, [])
    assert _rollups(history_db)[(A, _day(5))] == {
        "succeeded": 3, "lateness_p50_s": 1.0, "lateness_p95_s": 1.0}
    assert _rows_by_day(history_db) == {"2026-03-08": 1}

    # Statistics outlive the history: rollups for the dropped days, live for today's.
    with history_db.begin() as conn:
        _run(conn, A, 10, 0, InvocationStatus.SUCCEEDED, 2)
        stats = trigger_stats(conn, "t1", "p1", A, first_day=_day(1), last_day=_day(10))
        other_tenant = trigger_stats(conn, "t2", "p1", A, first_day=_day(1), last_day=_day(10))
    assert [(s.day, s.counts["succeeded"], s.counts["failed"], s.lateness_p50_s)
            for s in stats] == [
        (_day(1), 0, 1, 3.0), (_day(4), 3, 1, 3.0), (_day(5), 3, 0, 1.0),
        (_day(8), 1, 0, 5.0), (_day(10), 1, 0, 2.0)]
    assert other_tenant == []


def _bulk(conn: Any, day: int, rows: int) -> int:
    """``rows`` finished runs of trigger A on ``day``, a second apart; the number of BRIN
    ranges (128 pages each) its invocations partition then spans."""
    n = func.generate_series(1, rows).column_valued("n")
    column = Invocation.__table__.c
    start = dt.datetime(2026, 3, day, 8, 0, tzinfo=UTC)
    conn.execute(insert(Invocation).from_select(
        ["trigger_id", "tenant_id", "project_id", "scheduled_for", "status"],
        select(literal(A, column.trigger_id.type), literal("t1"), literal("p1"),
               literal(start, column.scheduled_for.type)
               + n * literal(dt.timedelta(seconds=1)),
               literal(InvocationStatus.SUCCEEDED, column.status.type))))
    pages = conn.execute(select(func.pg_relation_size(
        partitions.partition_name("invocations", _day(day))))).scalar_one() // 8192
    return -(-pages // 128)


def test_a_rolled_up_day_s_brin_ranges_are_summarized_and_today_s_are_not(
    history_db: Engine,
) -> None:
    _history(history_db)
    # Past one range: a partition's first range has its summary from the index's build
    # (on the empty partition), the others only once summarized.
    with history_db.begin() as conn:
        ranges = _bulk(conn, 8, 12_000)
    assert ranges >= 2
    maintain(history_db, now=NOW, retention_days=3)
    with history_db.begin() as conn:
        today_ranges = _bulk(conn, 10, 12_000)
        # 03-08 was rolled up: every range of its BRIN indexes has its summary; today's
        # ranges past the first have none yet (its attempts partition is empty).
        assert (partitions.summarize_day(conn, _day(8)),
                partitions.summarize_day(conn, _day(10))) == (0, today_ranges - 1)


def test_a_second_maintenance_run_at_the_same_time_does_nothing(history_db: Engine) -> None:
    with history_db.connect() as holder:
        holder.execute(select(func.pg_advisory_lock(HISTORY_NAMESPACE, 0)))
        holder.commit()
        assert maintain(history_db, now=NOW, retention_days=3).skipped
        holder.execute(select(func.pg_advisory_unlock(HISTORY_NAMESPACE, 0)))
        holder.commit()
    assert not maintain(history_db, now=NOW, retention_days=3).skipped


def test_a_day_whose_rows_reached_the_default_partition_first_stays_there(
    history_db: Engine,
) -> None:
    with history_db.begin() as conn:
        _run(conn, A, 11, 0, InvocationStatus.SUCCEEDED, 1)
    report = maintain(history_db, now=NOW, retention_days=3)
    assert report.added == [_day(9), _day(10), _day(12), _day(13)]
    with history_db.connect() as conn:
        where = conn.execute(text(
            "SELECT tableoid::regclass::text FROM invocations")).scalars().all()
    assert where == ["invocations_default"]


def test_a_drop_that_times_out_on_a_lock_is_undone_whole_and_done_next_run(
    history_db: Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.history import retention

    monkeypatch.setattr(retention, "LOCK_TIMEOUT_MS", 200)
    _history(history_db)
    with history_db.connect() as reader:
        # A long reader of the history: DETACH needs the parent to itself.
        reader.execute(text("LOCK TABLE invocations IN ACCESS SHARE MODE"))
        blocked = maintain(history_db, now=NOW, retention_days=3)
        reader.rollback()
    # Adding the 5 days ahead waits for it too; only the default partition's DELETE
    # of 03-01 (1 row) goes through.
    assert (blocked.added, blocked.dropped, blocked.rows_dropped, blocked.lock_timeouts) == (
        [], [], 1, 7)
    with history_db.connect() as conn:
        assert {_day(4), _day(6)} <= set(partitions.existing_days(conn))
        assert conn.execute(select(HistoryState.rows_dropped)).scalar() == 1
    again = maintain(history_db, now=NOW, retention_days=3)
    assert (len(again.added), again.dropped, again.rows_dropped) == (5, [_day(4), _day(6)], 8)
    assert _rows_by_day(history_db) == {"2026-03-05": 3, "2026-03-08": 1}


def test_alerts_past_the_retention_and_deleted_triggers_rules_and_states_go(
    history_db: Engine,
) -> None:
    live = uuid.UUID(int=0xC)
    with history_db.begin() as conn:
        conn.execute(insert(Trigger).values(
            id=live, tenant_id="t1", project_id="p1", name="live", cron_expression="* * * * *",
            next_run_at=NOW, target_kind="webhook", webhook_url="https://example.com"))
        for trigger_id in (live, A):  # A has no trigger row: it was deleted
            conn.execute(insert(TriggerAlertState).values(
                trigger_id=trigger_id, tenant_id="t1", project_id="p1", condition="failing"))
            conn.execute(insert(AlertRule).values(
                tenant_id="t1", project_id="p1", trigger_id=trigger_id, on_failure=True,
                failures_in_a_row=2, on_missed=True, on_recovery=True, on_didnt_run=True))
        conn.execute(insert(AlertRule).values(
            tenant_id="t1", project_id="p1", trigger_id=None, on_failure=True,
            failures_in_a_row=1, on_missed=True, on_recovery=True, on_didnt_run=True))
        kept = []
        for status, day in (("delivered", 6), ("failed", 6), ("pending", 6),
                            ("delivered", 7), ("failed", 9)):
            created = dt.datetime(2026, 3, day, 8, 0, tzinfo=UTC)
            kept.append(conn.execute(insert(Alert).values(
                tenant_id="t1", project_id="p1", channel_id=uuid.uuid4(), kind="failing",
                status=status, body={}, created_at=created, next_attempt_at=created,
            ).returning(Alert.id)).scalar_one())
    # Three days kept: from 2026-03-07 on; a pending alert stays until it is finished.
    report = maintain(history_db, now=NOW, retention_days=3)
    assert report.alerts_deleted == 2
    with history_db.connect() as conn:
        assert sorted(conn.execute(select(Alert.id)).scalars()) == sorted(kept[2:])
        assert list(conn.execute(select(TriggerAlertState.trigger_id)).scalars()) == [live]
        assert sorted(conn.execute(select(AlertRule.trigger_id)).scalars(),
                      key=str) == sorted([live, None], key=str)
