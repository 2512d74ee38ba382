"""/metrics numbers come from the database and parse as Prometheus text."""

from __future__ import annotations

import datetime as dt
import uuid

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.deploys.deploy import activate
from app.deploys.processes import RUN_QUEUE
from app.enums import ProcessKind, ProcessRole
from app.history import partitions
from app.metrics import collect, render
from app.models import Alert, DispatcherHeartbeat, HistoryState, Invocation, Trigger
from tests.support.processes import register


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


OLD_DAY = dt.date(1999, 12, 31)


def test_metrics_match_the_database_exactly(db: sessionmaker[Session]) -> None:
    register(db, "v7", ProcessKind.WORKER, (RUN_QUEUE,), role=ProcessRole.ACTIVE,
             consuming=True, pid=1)
    register(db, "v7", ProcessKind.WORKER, (RUN_QUEUE,), role=ProcessRole.ACTIVE,
             consuming=False, problem="consuming nothing", pid=2)
    register(db, "v7", ProcessKind.BEAT, role=ProcessRole.ACTIVE, pid=3)
    register(db, "v6", ProcessKind.BEAT, role=ProcessRole.SUPERSEDED, pid=4)
    register(db, "v6", ProcessKind.WORKER, (RUN_QUEUE,), pid=5, seen_s_ago=40)  # dead
    with db.begin() as session:
        now = session.execute(select(func.now())).scalar_one()
    with db.begin() as session:
        ids = []
        for n, late_s in enumerate((90, 30, None)):
            next_run_at = now - dt.timedelta(seconds=late_s) if late_s else now + dt.timedelta(
                hours=1)
            ids.append(session.execute(insert(Trigger).values(
                tenant_id="t1", project_id="p1", name=f"m{n}", cron_expression="* * * * *",
                next_run_at=next_run_at, target_kind="webhook",
                webhook_url="https://example.com",
            ).returning(Trigger.id)).scalar_one())
        base = now - dt.timedelta(minutes=10)
        rows = [
            # (status, lateness of start in seconds or None, created this hour?)
            ("succeeded", 1.0, True), ("succeeded", 3.0, True), ("failed", 5.0, True),
            ("missed", None, True), ("pending", None, True), ("succeeded", 100.0, False),
        ]
        for n, (status, late, recent) in enumerate(rows):
            scheduled = base + dt.timedelta(seconds=n)
            session.execute(insert(Invocation).values(
                id=uuid.uuid4(), trigger_id=ids[0], tenant_id="t1", project_id="p1",
                scheduled_for=scheduled, status=status,
                started_at=scheduled + dt.timedelta(seconds=late) if late else None,
                created_at=now if recent else now - dt.timedelta(hours=2),
            ))
        activate(session, "v7")
        session.execute(update(DispatcherHeartbeat).values(
            last_tick_at=now - dt.timedelta(seconds=12), last_tick_duration_ms=250.0))
        session.execute(update(HistoryState).values(
            rows_dropped=1234, partitions_dropped=3, last_run_at=now - dt.timedelta(seconds=60)))
        assert partitions.add_day(session.connection(), OLD_DAY)
        days = session.execute(text(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'invocations'::regclass")
        ).scalar_one() - 1  # not the default partition

    with db.begin() as session:
        snapshot = collect(session)
        partitions.drop_day(session.connection(), OLD_DAY)
    samples = _samples(render(snapshot))
    # The clock moved on between the inserts and collect(): lateness grows with it.
    elapsed = (snapshot.now - now).total_seconds()
    assert samples[("cronbeat_due_backlog", ())] == 2
    assert samples[("cronbeat_oldest_due_lateness_seconds", ())] == 90 + elapsed
    assert {labels[0][1]: v for (name, labels), v in samples.items()
            if name == "cronbeat_invocations_last_hour"} == {
        "pending": 2 - 1, "running": 0, "succeeded": 2, "failed": 1, "cancelled": 0,
        "skipped": 0, "missed": 1,
    }
    # Lateness of the three started runs of the last hour: 1, 3, 5 s (linear quantiles).
    assert {labels[0][1]: v for (name, labels), v in samples.items()
            if name == "cronbeat_start_lateness_seconds"} == {
        "0.5": 3.0, "0.9": 4.6, "0.99": 4.96}
    assert samples[("cronbeat_last_tick_age_seconds", ())] == 12 + elapsed
    assert samples[("cronbeat_last_tick_duration_seconds", ())] == 0.25
    assert samples[("cronbeat_scheduler_generation", ())] == 1
    assert samples[("cronbeat_active_deployment_info", (("deployment_id", "v7"),))] == 1
    assert {tuple(v for _, v in labels): value for (name, labels), value in samples.items()
            if name == "cronbeat_live_processes"} == {
        ("v7", "worker", "active"): 2, ("v7", "beat", "active"): 1,
        ("v6", "beat", "superseded"): 1}
    assert samples[("cronbeat_live_processes_with_problem", ())] == 1
    assert samples[("cronbeat_history_partitions", ())] == days
    assert samples[("cronbeat_history_oldest_day_timestamp_seconds", ())] == dt.datetime(
        1999, 12, 31, tzinfo=dt.UTC).timestamp()
    assert samples[("cronbeat_history_rows_dropped", ())] == 1234
    assert samples[("cronbeat_history_partitions_dropped", ())] == 3
    assert samples[("cronbeat_history_maintenance_age_seconds", ())] == 60 + elapsed


def test_alert_metrics_count_the_last_hour_by_status_and_the_pending_ones(
    db: sessionmaker[Session],
) -> None:
    with db.begin() as session:
        now = session.execute(select(func.now())).scalar_one()
        rows = [("delivered", 10), ("delivered", 20), ("failed", 30), ("pending", 40),
                ("pending", 95 * 60), ("failed", 2 * 3600)]
        for status, age_s in rows:
            created = now - dt.timedelta(seconds=age_s)
            session.execute(insert(Alert).values(
                tenant_id="t1", project_id="p1", channel_id=uuid.uuid4(), kind="failing",
                status=status, body={}, created_at=created, next_attempt_at=created))
    with db.begin() as session:
        snapshot = collect(session)
    samples = _samples(render(snapshot))
    elapsed = (snapshot.now - now).total_seconds()
    assert {labels[0][1]: v for (name, labels), v in samples.items()
            if name == "cronbeat_alerts_last_hour"} == {
        "delivered": 2, "failed": 1, "pending": 1}
    assert samples[("cronbeat_alerts_pending", ())] == 2
    assert samples[("cronbeat_oldest_pending_alert_age_seconds", ())] == 95 * 60 + elapsed
