"""Edits racing the dispatcher and the workers, against real PostgreSQL.

What an edit does to a trigger that is already due (app.schedule.occurrences.missed_rows),
a cancel racing a retry (app.editing.invocations), manual runs beside the schedule's own
keys (app.editing.manual), and disabling a trigger whose invocations are still pending
or running (app.queries.cancellation).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.editing import invocations, manual, sync, triggers
from app.enums import InvocationStatus
from app.errors import Conflict
from app.firing.dispatch import DispatchOptions, dispatch_tick
from app.models import Invocation, Trigger
from app.schedule import occurrences
from tests.support.runs import claim, finish_for_retry

UTC = dt.UTC
NOW = dt.datetime(2026, 3, 7, 5, 0, 30, tzinfo=UTC)
MINUTE = dt.timedelta(minutes=1)
HOOK = {"target_kind": "webhook", "webhook_url": "https://example.com/hook"}
MISSED = InvocationStatus.MISSED
PENDING = InvocationStatus.PENDING


def _minutely(name: str = "minutely", **overrides: object) -> dict[str, object]:
    return {"name": name, "cron_expression": "* * * * *", "timezone": "UTC", **HOOK,
            **overrides}


def _at(hour: int, minute: int, second: int = 0, microsecond: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, 7, hour, minute, second, microsecond, tzinfo=UTC)


def _create(db: sessionmaker[Session], values: dict[str, object],
            now: dt.datetime = NOW) -> Trigger:
    with db.begin() as session:
        return triggers.create_trigger(session, "t1", "p1", values, now=now)


def _history(db: sessionmaker[Session], trigger_id: uuid.UUID | None) -> list[tuple[Any, ...]]:
    """(scheduled_for, status, last_error, finished_at) of the trigger's invocations."""
    with db.begin() as session:
        rows = session.scalars(
            select(Invocation)
            .where(Invocation.trigger_id.is_(None) if trigger_id is None
                   else Invocation.trigger_id == trigger_id)
            .order_by(Invocation.scheduled_for)
        )
        return [(r.scheduled_for, r.status, r.last_error, r.finished_at) for r in rows]


def _dispatch(db: sessionmaker[Session], now: dt.datetime) -> list[uuid.UUID]:
    published: list[uuid.UUID] = []

    def publish(ids: list[uuid.UUID]) -> int:
        published.extend(ids)
        return len(ids)

    dispatch_tick(db, publish, DispatchOptions(), now=now)
    return published


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL the test's engine runs while the test runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


# -- 1. an edit of a due trigger records what it takes away --------------------------


def test_rescheduling_a_due_trigger_records_each_due_occurrence_missed(
    db: sessionmaker[Session],
):
    # Created at 05:00:30, next run 05:01; at 05:03:30 the dispatcher has recorded
    # nothing (down, or lagging). The new schedule counts from now.
    trigger = _create(db, _minutely())
    later = _at(5, 3, 30)
    with db.begin() as session:
        updated, _ = triggers.update_trigger(
            session, "t1", "p1", trigger.id, {"cron_expression": "*/10 * * * *"}, now=later)
        assert updated.next_run_at == _at(5, 10)
    reason = occurrences.RESCHEDULED_REASON
    assert _history(db, trigger.id) == [
        (_at(5, 1), MISSED, reason, later),
        (_at(5, 2), MISSED, reason, later),
        (_at(5, 3), MISSED, reason, later),
    ]


def test_an_edit_that_keeps_the_schedule_of_a_due_trigger_leaves_it_to_the_dispatcher(
    db: sessionmaker[Session],
):
    trigger = _create(db, _minutely())
    with db.begin() as session:
        updated, _ = triggers.update_trigger(
            session, "t1", "p1", trigger.id, {"description": "x"}, now=_at(5, 1, 30))
        assert updated.next_run_at == _at(5, 1)
    assert _history(db, trigger.id) == []
    assert len(_dispatch(db, _at(5, 1, 30))) == 1


def test_an_occurrence_already_recorded_keeps_its_row(db: sessionmaker[Session]):
    # Should a row for the occurrence exist already (replayed, repaired by hand), the
    # edit's insert does nothing on its key: that row, perhaps running, wins.
    trigger = _create(db, _minutely())
    with db.begin() as session:
        session.add(Invocation(trigger_id=trigger.id, tenant_id="t1", project_id="p1",
                               scheduled_for=_at(5, 1), status=PENDING))
    with db.begin() as session:
        triggers.update_trigger(session, "t1", "p1", trigger.id,
                                {"cron_expression": "0 * * * *"}, now=_at(5, 2, 30))
    assert [row[:2] for row in _history(db, trigger.id)] == [
        (_at(5, 1), PENDING), (_at(5, 2), MISSED)]


def test_pausing_or_deleting_a_due_trigger_records_its_occurrence_missed(
    db: sessionmaker[Session],
):
    paused = _create(db, _minutely("paused"))
    deleted = _create(db, _minutely("deleted"))
    later = _at(5, 1, 30)
    with db.begin() as session:
        triggers.update_trigger(session, "t1", "p1", paused.id, {"enabled": False}, now=later)
        triggers.delete_trigger(session, "t1", "p1", deleted.id, now=later)
    assert _history(db, paused.id) == [(_at(5, 1), MISSED, occurrences.DISABLED_REASON, later)]
    # The deleted trigger's history stays, under its trigger id like the rest of it.
    assert _history(db, deleted.id) == [(_at(5, 1), MISSED, occurrences.DELETED_REASON, later)]


def test_deleting_by_ref_records_the_due_occurrences_of_each(db: sessionmaker[Session]):
    gone = [_create(db, _minutely(name, ref="r")).id for name in ("a", "b")]
    _create(db, _minutely("c", ref="other"))
    with db.begin() as session:
        assert triggers.delete_triggers_by_ref(session, "t1", "p1", "r", now=_at(5, 1, 1)) == 2
    # Each deleted trigger's history stays under its id.
    assert [[row[1] for row in _history(db, trigger_id)] for trigger_id in gone] == [
        [MISSED], [MISSED]]


def test_moving_the_run_at_of_a_due_one_time_trigger_records_the_old_one_missed(
    db: sessionmaker[Session],
):
    run_at = _at(5, 1, 30, 250)
    trigger = _create(db, {"name": "once", "run_at": run_at, **HOOK})
    later = _at(5, 2)
    with db.begin() as session:
        updated, _ = triggers.update_trigger(session, "t1", "p1", trigger.id,
                                             {"run_at": _at(6, 0)}, now=later)
        assert updated.next_run_at == _at(6, 0)
    assert _history(db, trigger.id) == [(run_at, MISSED, occurrences.RESCHEDULED_REASON, later)]


def test_a_long_backlog_is_recorded_as_one_summary_row_by_the_dispatcher_s_rule(
    db: sessionmaker[Session],
):
    trigger = _create(db, _minutely())
    much_later = NOW + dt.timedelta(days=1)
    with db.begin() as session:
        triggers.update_trigger(session, "t1", "p1", trigger.id, {"timezone": "Europe/Paris"},
                                now=much_later)
    # 1,440 due; an edit looks at as many as a dispatcher's claim (1,100) and folds them
    # (occurrences.fold_missed): one row, with the count and the rest up to now.
    enumerated = occurrences.MAX_OCCURRENCES_PER_CLAIM + occurrences.MAX_CATCH_UP_RUNS
    last = _at(5, 1) + (enumerated - 1) * MINUTE
    assert _history(db, trigger.id) == [(last, MISSED, (
        f"{occurrences.RESCHEDULED_REASON} (this row stands for {enumerated} missed "
        f"occurrences from {_at(5, 1).isoformat()} to {last.isoformat()}, and so were the "
        f"later ones up to {much_later.isoformat()})"), much_later)]


def test_a_backlog_within_one_claim_keeps_its_latest_rows_and_folds_the_older(
    db: sessionmaker[Session],
):
    trigger = _create(db, _minutely())
    later = _at(5, 1) + 149 * MINUTE + dt.timedelta(seconds=30)
    with db.begin() as session:
        triggers.update_trigger(session, "t1", "p1", trigger.id, {"timezone": "Europe/Paris"},
                                now=later)
    rows = _history(db, trigger.id)
    assert len(rows) == 1 + occurrences.MAX_MISSED_ROWS
    assert rows[0][0] == _at(5, 1) + 49 * MINUTE
    assert "this row stands for 50 missed occurrences" in rows[0][2]
    assert [r[0] for r in rows[1:]] == [_at(5, 1) + (50 + i) * MINUTE for i in range(100)]
    assert {r[2] for r in rows[1:]} == {occurrences.RESCHEDULED_REASON}


def test_a_sync_records_what_it_takes_from_due_triggers_in_one_insert(
    db: sessionmaker[Session], statements: list[str],
):
    created = {name: _create(db, _minutely(name)).id
               for name in ("moved", "paused", "gone", "kept")}
    later = _at(5, 2, 30)
    statements.clear()
    with db.begin() as session:
        result = sync.sync_triggers(session, "t1", "p1", [
            _minutely("moved", cron_expression="0 * * * *"),
            _minutely("paused", enabled=False),
            _minutely("kept"),
        ], now=later)
    assert (result.updated, result.deleted, result.unchanged) == (
        ["moved", "paused"], ["gone"], ["kept"])
    assert sum(s.lstrip().upper().startswith("INSERT INTO INVOCATIONS")
               for s in statements) == 1
    with db.begin() as session:
        ids = {t.name: t.id for t in session.scalars(select(Trigger))}
        assert session.get(Trigger, ids["kept"]).next_run_at == _at(5, 1)
    assert [row[:3] for row in _history(db, ids["moved"])] == [
        (_at(5, 1), MISSED, occurrences.RESCHEDULED_REASON),
        (_at(5, 2), MISSED, occurrences.RESCHEDULED_REASON)]
    assert [row[2] for row in _history(db, ids["paused"])] == [occurrences.DISABLED_REASON] * 2
    assert [row[2] for row in _history(db, created["gone"])] == [
        occurrences.DELETED_REASON] * 2
    assert _history(db, ids["kept"]) == []


# -- 2. a cancel racing a retry -------------------------------------------------------


def test_a_cancel_racing_a_retry_is_never_a_conflict(
    db: sessionmaker[Session], engine: Engine,
):
    # The attempt fails transiently (the live finish: running -> pending for a retry)
    # right after the cancel's first statement ran. A cancel must neither miss the row
    # nor answer 409; the retry then ends cancelled instead of running again.
    trigger = _create(db, _minutely())
    _dispatch(db, _at(5, 1))
    with db.begin() as session:
        invocation_id = session.scalars(select(Invocation.id)).one()
        attempt = claim(session, invocation_id)
        assert attempt == 1
    released: list[InvocationStatus | None] = []

    def release() -> None:
        with db.begin() as worker:
            # A worker waits for a row lock; here waiting would deadlock the test, so
            # a held lock means "later", and the worker tries again after the commit.
            worker.execute(text("SET LOCAL lock_timeout = '100ms'"))
            released.append(finish_for_retry(
                worker, invocation_id, attempt, delay_s=1, error="HTTP 503",
                response_status=503))

    def between(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # Once, after the cancel's first UPDATE (the worker's own UPDATE comes here too).
        if statement.lstrip().startswith("UPDATE invocations") and not released:
            released.append(None)
            with contextlib.suppress(OperationalError):  # lock timeout: the cancel holds it
                release()

    event.listen(engine, "after_cursor_execute", between)
    try:
        with db.begin() as session:
            cancelled = invocations.cancel_invocation(session, "t1", "p1", invocation_id,
                                                      now=_at(5, 1, 5))
            assert cancelled.status is InvocationStatus.RUNNING and cancelled.cancel_requested
    finally:
        event.remove(engine, "after_cursor_execute", between)
    released.clear()
    release()
    assert released == [InvocationStatus.CANCELLED]
    assert [row[1] for row in _history(db, trigger.id)] == [InvocationStatus.CANCELLED]


def test_cancelling_a_final_invocation_is_a_conflict_and_changes_nothing(
    db: sessionmaker[Session],
):
    trigger = _create(db, _minutely())
    with db.begin() as session:
        done = Invocation(trigger_id=trigger.id, tenant_id="t1", project_id="p1",
                          scheduled_for=_at(5, 1), status=InvocationStatus.SUCCEEDED,
                          finished_at=_at(5, 1, 2))
        session.add(done)
    with pytest.raises(Conflict), db.begin() as session:
        invocations.cancel_invocation(session, "t1", "p1", done.id, now=_at(5, 2))
    assert _history(db, trigger.id) == [
        (_at(5, 1), InvocationStatus.SUCCEEDED, None, _at(5, 1, 2))]


# -- 4. manual runs never take a scheduled occurrence's key ---------------------------


def test_a_manual_run_at_a_whole_minute_leaves_that_occurrence_to_the_schedule(
    db: sessionmaker[Session],
):
    trigger = _create(db, _minutely())
    with db.begin() as session:
        ran = manual.run_now(session, "t1", "p1", trigger.id, now=_at(5, 1))
        assert ran.scheduled_for == _at(5, 1, 0, 1)
    assert len(_dispatch(db, _at(5, 1))) == 1
    with db.begin() as session:
        rows = session.execute(select(Invocation.scheduled_for, Invocation.manual)
                               .order_by(Invocation.scheduled_for)).all()
    assert [tuple(row) for row in rows] == [(_at(5, 1), False), (_at(5, 1, 0, 1), True)]


def test_a_manual_run_after_the_dispatcher_took_the_same_instant_is_recorded(
    db: sessionmaker[Session],
):
    trigger = _create(db, _minutely())
    _dispatch(db, _at(5, 1))
    with db.begin() as session:
        first = manual.run_now(session, "t1", "p1", trigger.id, now=_at(5, 1))
        second = manual.run_now(session, "t1", "p1", trigger.id, now=_at(5, 1))
    assert (first.scheduled_for, second.scheduled_for) == (_at(5, 1, 0, 1), _at(5, 1, 0, 2))
    assert len(_history(db, trigger.id)) == 3


def test_a_manual_run_never_takes_a_one_time_triggers_run_at(db: sessionmaker[Session]):
    run_at = _at(5, 1, 30, 7)
    trigger = _create(db, {"name": "once", "run_at": run_at, **HOOK})
    with db.begin() as session:
        ran = manual.run_now(session, "t1", "p1", trigger.id, now=run_at)
        assert ran.scheduled_for == run_at + dt.timedelta(microseconds=1)
    assert len(_dispatch(db, run_at)) == 1
    assert [row[0] for row in _history(db, trigger.id)] == [
        run_at, run_at + dt.timedelta(microseconds=1)]


def test_manual_instants_skip_whole_seconds_and_the_run_at():
    once = Trigger(run_at=_at(5, 1, 0, 1))
    cron = Trigger(run_at=None)
    assert manual.manual_instant(cron, _at(5, 1, 2, 3)) == _at(5, 1, 2, 3)
    assert manual.manual_instant(cron, _at(5, 1, 2)) == _at(5, 1, 2, 1)
    assert manual.manual_instant(once, _at(5, 1)) == _at(5, 1, 0, 2)


# -- 5. disabling stops scheduled runs, also of a fired one-time trigger ---------------


def _fired_once(db: sessionmaker[Session]) -> tuple[Trigger, uuid.UUID]:
    run_at = NOW + dt.timedelta(hours=1)
    trigger = _create(db, {"name": "once", "run_at": run_at, **HOOK})
    assert len(_dispatch(db, run_at + dt.timedelta(seconds=1))) == 1
    with db.begin() as session:
        fired = session.get(Trigger, trigger.id)
        assert (fired.enabled, fired.next_run_at) == (False, None)
        return fired, session.scalars(select(Invocation.id)).one()


def test_pausing_a_fired_one_time_trigger_stops_its_retries_but_not_manual_runs(
    db: sessionmaker[Session],
):
    trigger, scheduled_id = _fired_once(db)
    later = trigger.run_at + 5 * MINUTE
    with db.begin() as session:
        manual_id = manual.run_now(session, "t1", "p1", trigger.id, now=later).id
    with db.begin() as session:
        paused, _ = triggers.update_trigger(session, "t1", "p1", trigger.id,
                                            {"enabled": False}, now=later)
        assert paused.version == 1  # nothing about the trigger itself changed
    with db.begin() as session:
        scheduled = session.get(Invocation, scheduled_id)
        assert scheduled.status is InvocationStatus.CANCELLED
        assert (scheduled.last_error, scheduled.finished_at) == ("trigger disabled", later)
        assert session.get(Invocation, manual_id).status is PENDING


def test_pausing_a_fired_one_time_trigger_mid_attempt_cancels_the_retry(
    db: sessionmaker[Session],
):
    trigger, invocation_id = _fired_once(db)
    with db.begin() as session:
        attempt = claim(session, invocation_id)
        assert attempt == 1
    with db.begin() as session:
        triggers.update_trigger(session, "t1", "p1", trigger.id, {"enabled": False},
                                now=trigger.run_at + MINUTE)
    with db.begin() as session:
        assert session.get(Invocation, invocation_id).cancel_requested
        assert finish_for_retry(
            session, invocation_id, attempt, delay_s=1, error="HTTP 503",
            response_status=503) is InvocationStatus.CANCELLED


def test_a_sync_saying_enabled_false_stops_a_fired_one_time_triggers_retries(
    db: sessionmaker[Session],
):
    trigger, invocation_id = _fired_once(db)
    definition = {"name": "once", "run_at": trigger.run_at, **HOOK}
    later = trigger.run_at + MINUTE
    with db.begin() as session:
        # The same file again, `enabled` left out: it stays finished, its run goes on.
        assert sync.sync_triggers(session, "t1", "p1", [definition], now=later).unchanged
    with db.begin() as session:
        assert session.get(Invocation, invocation_id).status is PENDING
    with db.begin() as session:
        sync.sync_triggers(session, "t1", "p1", [dict(definition, enabled=False)], now=later)
    with db.begin() as session:
        assert session.get(Invocation, invocation_id).status is InvocationStatus.CANCELLED
