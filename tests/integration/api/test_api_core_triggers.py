"""The editing core (app.editing.triggers, app.editing.sync, app.editing.invocations)
against real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app import errors
from app.editing import invocations, manual, sync, triggers
from app.enums import InvocationStatus
from app.errors import Conflict, NotFound
from app.firing.dispatch import DispatchOptions, dispatch_tick
from app.models import Invocation, Trigger

UTC = dt.UTC
NOW = dt.datetime(2026, 3, 7, 5, 0, 30, tzinfo=UTC)
HOOK = {"target_kind": "webhook", "webhook_url": "https://example.com/hook"}


def _nightly(**overrides: object) -> dict[str, object]:
    return {"name": "nightly", "cron_expression": "30 2 * * *", "timezone": "Europe/Paris",
            **HOOK, **overrides}


def _pending(session: Session, trigger: Trigger, at: dt.datetime) -> Invocation:
    invocation = Invocation(trigger_id=trigger.id, tenant_id=trigger.tenant_id,
                            project_id=trigger.project_id, scheduled_for=at)
    session.add(invocation)
    session.flush()
    return invocation


def test_creating_a_cron_trigger_computes_its_first_run_in_its_zone(db: sessionmaker[Session]):
    with db.begin() as session:
        trigger = triggers.create_trigger(session, "t1", "p1", _nightly(), now=NOW)
    # 02:30 in Paris (UTC+1 in early March) is 01:30 UTC, and 05:00 UTC already passed it.
    assert trigger.next_run_at == dt.datetime(2026, 3, 8, 1, 30, tzinfo=UTC)
    assert trigger.version == 1
    assert trigger.signing_secret.startswith("whsec_")


def test_a_one_time_trigger_runs_at_its_run_at_which_must_lie_ahead(db: sessionmaker[Session]):
    later = NOW + dt.timedelta(hours=1)
    with db.begin() as session:
        trigger = triggers.create_trigger(
            session, "t1", "p1", {"name": "once", "run_at": later, **HOOK}, now=NOW)
    assert trigger.next_run_at == later
    with pytest.raises(errors.InvalidTrigger) as caught, db.begin() as session:
        triggers.create_trigger(session, "t1", "p1",
                                {"name": "past", "run_at": NOW, **HOOK}, now=NOW)
    assert caught.value.field == "run_at"


def test_a_duplicate_name_is_name_taken_and_the_transaction_stays_usable(
    db: sessionmaker[Session],
):
    with db.begin() as session:
        triggers.create_trigger(session, "t1", "p1", _nightly(), now=NOW)
        with pytest.raises(errors.NameTaken):
            triggers.create_trigger(session, "t1", "p1", _nightly(), now=NOW)
        triggers.create_trigger(session, "t1", "p1", _nightly(name="other"), now=NOW)
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(Trigger)) == 2


def test_an_edit_that_leaves_the_schedule_alone_keeps_next_run_at(db: sessionmaker[Session]):
    with db.begin() as session:
        trigger = triggers.create_trigger(session, "t1", "p1", _nightly(), now=NOW)
    later = NOW + dt.timedelta(days=3)
    with db.begin() as session:
        updated, generated = triggers.update_trigger(
            session, "t1", "p1", trigger.id, {"description": "x"}, now=later)
    assert updated.next_run_at == trigger.next_run_at
    assert updated.version == 2 and updated.updated_at == later and generated is None


def test_rescheduling_counts_the_next_run_from_now(db: sessionmaker[Session]):
    with db.begin() as session:
        trigger = triggers.create_trigger(session, "t1", "p1", _nightly(), now=NOW)
    with db.begin() as session:
        updated, _ = triggers.update_trigger(
            session, "t1", "p1", trigger.id, {"cron_expression": "*/10 * * * *"}, now=NOW)
    assert updated.next_run_at == dt.datetime(2026, 3, 7, 5, 10, tzinfo=UTC)


def test_disabling_cancels_pending_runs_and_re_enabling_counts_from_now(
    db: sessionmaker[Session],
):
    with db.begin() as session:
        trigger = triggers.create_trigger(session, "t1", "p1", _nightly(
            cron_expression="* * * * *", timezone="UTC"), now=NOW)
        invocation = _pending(session, trigger, NOW)
    with db.begin() as session:
        updated, _ = triggers.update_trigger(
            session, "t1", "p1", trigger.id, {"enabled": False}, now=NOW)
        assert updated.next_run_at is None
    with db.begin() as session:
        cancelled = session.get(Invocation, invocation.id)
        assert cancelled.status is InvocationStatus.CANCELLED
        assert cancelled.last_error == "trigger disabled" and cancelled.finished_at == NOW
    much_later = NOW + dt.timedelta(days=30)
    with db.begin() as session:
        updated, _ = triggers.update_trigger(
            session, "t1", "p1", trigger.id, {"enabled": True}, now=much_later)
    assert updated.next_run_at == dt.datetime(2026, 4, 6, 5, 1, tzinfo=UTC)
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(Invocation)) == 1


def test_a_stale_version_is_refused(db: sessionmaker[Session]):
    with db.begin() as session:
        trigger = triggers.create_trigger(session, "t1", "p1", _nightly(), now=NOW)
    with pytest.raises(errors.StaleVersion), db.begin() as session:
        triggers.update_trigger(session, "t1", "p1", trigger.id, {"description": "x"},
                                now=NOW, expected_version=7)


def test_another_tenants_trigger_is_not_found(db: sessionmaker[Session]):
    with db.begin() as session:
        trigger = triggers.create_trigger(session, "t1", "p1", _nightly(), now=NOW)
    for tenant, project in (("t2", "p1"), ("t1", "p2")):
        with pytest.raises(NotFound), db.begin() as session:
            triggers.update_trigger(session, tenant, project, trigger.id, {}, now=NOW)
        with pytest.raises(NotFound), db.begin() as session:
            manual.run_now(session, tenant, project, trigger.id, now=NOW)


def test_deleting_cancels_pending_runs_and_keeps_the_history(db: sessionmaker[Session]):
    with db.begin() as session:
        trigger = triggers.create_trigger(session, "t1", "p1", _nightly(), now=NOW)
        invocation = _pending(session, trigger, NOW)
    with db.begin() as session:
        triggers.delete_trigger(session, "t1", "p1", trigger.id, now=NOW)
    with db.begin() as session:
        kept = session.get(Invocation, invocation.id)
        # Still under its trigger's id: deleting the trigger rewrote none of its history.
        assert kept.trigger_id == trigger.id
        assert kept.status is InvocationStatus.CANCELLED and kept.last_error == "trigger deleted"


def test_cancel_moves_pending_to_cancelled_running_to_requested_and_refuses_final(
    db: sessionmaker[Session],
):
    with db.begin() as session:
        trigger = triggers.create_trigger(session, "t1", "p1", _nightly(), now=NOW)
        pending = _pending(session, trigger, NOW)
        running = _pending(session, trigger, NOW - dt.timedelta(minutes=1))
        running.status = InvocationStatus.RUNNING
        done = _pending(session, trigger, NOW - dt.timedelta(minutes=2))
        done.status = InvocationStatus.SUCCEEDED
    with db.begin() as session:
        assert invocations.cancel_invocation(
            session, "t1", "p1", pending.id, now=NOW).status is InvocationStatus.CANCELLED
        again = invocations.cancel_invocation(session, "t1", "p1", running.id, now=NOW)
        assert again.status is InvocationStatus.RUNNING and again.cancel_requested
    with pytest.raises(Conflict), db.begin() as session:
        invocations.cancel_invocation(session, "t1", "p1", done.id, now=NOW)
    with pytest.raises(NotFound), db.begin() as session:
        invocations.cancel_invocation(session, "t2", "p1", running.id, now=NOW)


def test_sync_creates_updates_deletes_and_leaves_identical_ones_alone(
    db: sessionmaker[Session],
):
    with db.begin() as session:
        keep = triggers.create_trigger(session, "t1", "p1", _nightly(name="keep"), now=NOW)
        change = triggers.create_trigger(session, "t1", "p1", _nightly(name="change"), now=NOW)
        gone = triggers.create_trigger(session, "t1", "p1", _nightly(name="gone"), now=NOW)
        _pending(session, gone, NOW)
        triggers.create_trigger(session, "t2", "p1", _nightly(name="gone"), now=NOW)
    desired = [
        _nightly(name="keep"),
        _nightly(name="change", cron_expression="*/5 * * * *", enabled=True),
        _nightly(name="new", payload={"a": [1, 2]}),
        {"name": "task", "cron_expression": "@hourly", "target_kind": "task",
         "task_name": "app.tasks.report"},
    ]
    with db.begin() as session:
        result = sync.sync_triggers(session, "t1", "p1", desired, now=NOW)
    assert result.created == ["new", "task"]
    assert result.updated == ["change"]
    assert result.deleted == ["gone"]
    assert result.unchanged == ["keep"]
    assert list(result.signing_secrets) == ["new"]
    with db.begin() as session:
        mine = session.scalars(select(Trigger).where(Trigger.tenant_id == "t1"))
        rows = {t.name: t for t in mine}
        assert set(rows) == {"keep", "change", "new", "task"}
        assert rows["keep"].version == 1 and rows["keep"].next_run_at == keep.next_run_at
        assert rows["change"].version == 2
        assert rows["change"].signing_secret == change.signing_secret
        assert rows["change"].next_run_at == dt.datetime(2026, 3, 7, 5, 5, tzinfo=UTC)
        assert rows["new"].payload == {"a": [1, 2]}
        assert rows["task"].next_run_at == dt.datetime(2026, 3, 7, 6, 0, tzinfo=UTC)
        assert rows["task"].signing_secret is None
        cancelled = session.scalar(select(Invocation))
        assert cancelled.status is InvocationStatus.CANCELLED
        assert session.scalar(select(func.count()).select_from(Trigger)) == 5


def test_a_dry_run_sync_reports_the_same_and_writes_nothing(db: sessionmaker[Session]):
    with db.begin() as session:
        triggers.create_trigger(session, "t1", "p1", _nightly(name="gone"), now=NOW)
    with db.begin() as session:
        result = sync.sync_triggers(session, "t1", "p1", [_nightly(name="new")], now=NOW,
                                    dry_run=True)
    assert (result.created, result.deleted, result.signing_secrets) == (["new"], ["gone"], {})
    with db.begin() as session:
        assert [t.name for t in session.scalars(select(Trigger))] == ["gone"]


def test_sync_refuses_duplicate_names_and_bad_definitions_without_writing(
    db: sessionmaker[Session],
):
    with pytest.raises(errors.InvalidTrigger) as caught, db.begin() as session:
        sync.sync_triggers(session, "t1", "p1", [_nightly(), _nightly()], now=NOW)
    assert caught.value.field == "triggers"
    with pytest.raises(errors.InvalidTrigger) as caught, db.begin() as session:
        sync.sync_triggers(session, "t1", "p1",
                           [_nightly(name="a"), _nightly(name="b", run_at=NOW,
                                                         cron_expression=None)], now=NOW)
    assert caught.value.field == "triggers.b.run_at"
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(Trigger)) == 0


def test_run_now_records_one_manual_pending_invocation(db: sessionmaker[Session]):
    with db.begin() as session:
        trigger = triggers.create_trigger(session, "t1", "p1", _nightly(), now=NOW)
    with db.begin() as session:
        invocation = manual.run_now(session, "t1", "p1", trigger.id, now=NOW)
    with db.begin() as session:
        stored = session.get(Invocation, invocation.id)
        # NOW is a whole second, which a schedule may use: the run is keyed 1 µs later.
        assert stored.manual and stored.scheduled_for == NOW + dt.timedelta(microseconds=1)
        assert stored.status is InvocationStatus.PENDING and stored.enqueued_at is None
        assert session.get(Trigger, trigger.id).next_run_at == trigger.next_run_at
    assert isinstance(invocation.id, uuid.UUID)


def test_renaming_onto_a_taken_name_is_name_taken_and_changes_nothing(
    db: sessionmaker[Session],
):
    with db.begin() as session:
        triggers.create_trigger(session, "t1", "p1", _nightly(name="a"), now=NOW)
        second = triggers.create_trigger(session, "t1", "p1", _nightly(name="b"), now=NOW)
    with db.begin() as session:
        with pytest.raises(errors.NameTaken):
            triggers.update_trigger(session, "t1", "p1", second.id, {"name": "a"}, now=NOW)
        assert triggers.get_trigger(session, "t1", "p1", second.id).version == 1
    with db.begin() as session:
        assert session.get(Trigger, second.id).name == "b"


def test_the_core_refuses_a_run_at_past_the_year_9000(db: sessionmaker[Session]):
    far = dt.datetime(9999, 12, 31, 23, tzinfo=UTC)
    once = _nightly(name="once", cron_expression=None, run_at=far, timezone="Etc/GMT-14")
    with pytest.raises(errors.InvalidTrigger) as caught, db.begin() as session:
        sync.sync_triggers(session, "t1", "p1", [once], now=NOW)
    assert caught.value.field == "triggers.once.run_at"
    with pytest.raises(errors.InvalidTrigger) as caught, db.begin() as session:
        triggers.create_trigger(session, "t1", "p1", dict(once, enabled=False), now=NOW)
    assert caught.value.field == "run_at"
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(Trigger)) == 0


def test_re_syncing_a_one_time_trigger_the_dispatcher_fired_leaves_it_finished(
    db: sessionmaker[Session],
):
    run_at = NOW + dt.timedelta(hours=1)
    once = _nightly(name="once", cron_expression=None, run_at=run_at)
    with db.begin() as session:
        assert sync.sync_triggers(session, "t1", "p1", [once], now=NOW).created == ["once"]
    published: list[uuid.UUID] = []

    def publish(ids: list[uuid.UUID]) -> int:
        published.extend(ids)
        return len(ids)

    dispatch_tick(db, publish, DispatchOptions(), now=run_at + dt.timedelta(seconds=1))
    assert len(published) == 1
    later = run_at + dt.timedelta(hours=1)
    with db.begin() as session:
        fired = session.scalars(select(Trigger)).one()
        assert (fired.enabled, fired.next_run_at, fired.last_scheduled_for) == (
            False, None, run_at)
        result = sync.sync_triggers(session, "t1", "p1", [once], now=later)
    assert (result.unchanged, result.updated) == (["once"], [])
    with db.begin() as session:
        still = session.scalars(select(Trigger)).one()
        assert (still.enabled, still.next_run_at, still.version) == (False, None, 1)
    with pytest.raises(errors.InvalidTrigger) as caught, db.begin() as session:
        sync.sync_triggers(session, "t1", "p1", [dict(once, run_at=NOW)], now=later)
    assert caught.value.field == "triggers.once.run_at"
