"""/metrics numbers come from the database and parse as Prometheus text."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import math
import re
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine, func, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from api import create_app
from app.config import Settings
from app.db import make_session_factory
from app.deploys.deploy import activate
from app.deploys.processes import RUN_QUEUE
from app.editing.backfill import backfill
from app.editing.triggers import delete_trigger
from app.enums import InvocationStatus, ProcessKind, ProcessRole
from app.history import partitions
from app.history.retention import MaintenanceReport, maintain
from app.metrics import collect, render
from app.models import (
    Alert,
    DispatcherHeartbeat,
    HistoryState,
    Invocation,
    InvocationAttempt,
    Trigger,
)
from app.queries.attempt_sql import TAKEN_BACK_NOTE
from tests.conftest import Services
from tests.support.processes import register
from tests.support.runs import add_trigger


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
    assert samples[("cronbeat_history_rows_dropped_total", ())] == 1234
    assert samples[("cronbeat_history_partitions_dropped_total", ())] == 3
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


# --- Served over HTTP from a database of its own, parsed whole -----------------------

README = Path(__file__).resolve().parents[2] / "README.md"
#: A family row of README's metrics table: | `name` | type | labels | meaning |
README_ROW = re.compile(r"^\| `(cronbeat_\w+)` \| (counter|gauge|histogram) \|")
COUNTER_FAMILIES = ("cronbeat_invocations", "cronbeat_attempts", "cronbeat_alerts",
                    "cronbeat_start_lateness_seconds")
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
RETENTION_DAYS = 3


S = InvocationStatus


def _at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=dt.UTC)


def _minutes() -> Iterator[dt.datetime]:
    """03-08 09:00, 09:01, ...: one instant per invocation of a test."""
    return (_at(8, 9, minute) for minute in range(60))


@dataclasses.dataclass
class Served:
    """The API over real HTTP on a database of its own, and that database."""

    url: str
    engine: Engine
    db: sessionmaker[Session]

    def families(self) -> dict[str, Metric]:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            assert response.status == 200
            body = response.read().decode()
        return {family.name: family for family in text_string_to_metric_families(body)}

    def samples(self, *names: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The samples of ``names`` (every family without names)."""
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in self.families().values() if not names or family.name in names
            for sample in family.samples
        }

    def counters(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return self.samples(*COUNTER_FAMILIES, "cronbeat_history_rows_dropped",
                            "cronbeat_history_partitions_dropped")

    def maintain(self, now: dt.datetime) -> MaintenanceReport:
        return maintain(self.engine, now=now, retention_days=RETENTION_DAYS)


@pytest.fixture
def served(test_services: Services, settings: Settings) -> Iterator[Served]:
    url = test_services.url(test_services.new_database())
    app = create_app(dataclasses.replace(settings, database_url=url))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    engine = create_engine(url)
    try:
        yield Served(f"http://127.0.0.1:{server.port}", engine, make_session_factory(engine))
    finally:
        server.shutdown()
        thread.join(10)
        engine.dispose()
        app.extensions["cronbeat"].engine.dispose()


def _by_label(samples: dict[Any, float], name: str) -> dict[str, float]:
    return {labels[0][1]: value for (sample, labels), value in samples.items()
            if sample == name}


def _readme_families() -> dict[str, str]:
    text_ = README.read_text()
    section = text_[text_.index("**Metrics.**"):text_.index("**Flower**")]
    return {m.group(1): m.group(2) for line in section.splitlines()
            if (m := README_ROW.match(line))}


def test_readme_lists_exactly_the_served_families_each_with_help_and_type_from_the_first_scrape(
    served: Served,
) -> None:
    with served.db.begin() as session:
        watched_since = session.execute(select(HistoryState.watched_since)).scalar_one()
        since_s = (session.execute(select(func.now())).scalar_one()
                   - watched_since).total_seconds()
    families = served.families()
    exposed = {(f"{name}_total" if family.type == "counter" else name): family.type
               for name, family in families.items()}
    assert exposed == _readme_families()
    assert all(family.documentation for family in families.values())
    samples = served.samples()
    # An empty database: every counter and bucket at 0, times not yet happened NaN,
    # ages counted from history_state.watched_since (migration 0019).
    assert {name: v for (name, _), v in samples.items() if name.endswith("_total")} == {
        "cronbeat_invocations_total": 0, "cronbeat_attempts_total": 0,
        "cronbeat_alerts_total": 0, "cronbeat_history_rows_dropped_total": 0,
        "cronbeat_history_partitions_dropped_total": 0}
    assert len([k for k in samples if k[0] == "cronbeat_invocations_total"]) == 5
    assert set(_by_label(samples, "cronbeat_start_lateness_seconds_bucket").values()) == {0}
    assert samples[("cronbeat_start_lateness_seconds_count", ())] == 0
    assert samples[("cronbeat_start_lateness_seconds_sum", ())] == 0
    assert math.isnan(samples[("cronbeat_last_tick_timestamp_seconds", ())])
    assert math.isnan(samples[("cronbeat_last_tick_duration_seconds", ())])
    for age in ("cronbeat_history_maintenance_age_seconds", "cronbeat_last_tick_age_seconds"):
        assert since_s <= samples[(age, ())] < since_s + 30
    assert _by_label(samples, "cronbeat_invocations_in_flight") == {"pending": 0, "running": 0}


def _invocation(session: Session, trigger_id: uuid.UUID, at: dt.datetime,
                status: InvocationStatus, *attempts: tuple[float, str | None],
                **values: Any) -> uuid.UUID:
    """An invocation and its attempts, each (seconds late, outcome or None: open);
    recorded at its scheduled time unless ``values`` give a ``created_at``."""
    values.setdefault("created_at", at)
    invocation_id = session.execute(insert(Invocation).values(
        trigger_id=trigger_id, tenant_id="t1", project_id="p1", scheduled_for=at,
        status=status, attempt=len(attempts), **values,
    ).returning(Invocation.id)).scalar_one()
    for number, (late_s, outcome) in enumerate(attempts, start=1):
        session.execute(insert(InvocationAttempt).values(
            invocation_id=invocation_id, scheduled_for=at, number=number,
            started_at=at + dt.timedelta(seconds=late_s), outcome=outcome,
            finished_at=None if outcome is None else at + dt.timedelta(seconds=late_s + 1)))
    return invocation_id


def _alert(session: Session, status: str, created_at: dt.datetime) -> None:
    session.execute(insert(Alert).values(
        tenant_id="t1", project_id="p1", channel_id=uuid.uuid4(), kind="failing",
        status=status, body={}, created_at=created_at, next_attempt_at=created_at))


def test_counters_count_finished_invocations_attempts_and_alerts_exactly(
    served: Served,
) -> None:
    trigger = add_trigger(served.db)
    with served.db.begin() as session:
        at = _minutes()
        _invocation(session, trigger, next(at), S.SUCCEEDED, (1, "error"), (2, "succeeded"))
        # Its lease was taken back (abandoned), then its worker reported a success.
        _invocation(session, trigger, next(at), S.SUCCEEDED, (1, "succeeded"))
        session.execute(update(InvocationAttempt).where(InvocationAttempt.number == 1,
                                                        InvocationAttempt.outcome == "succeeded")
                        .values(error=f"timed out; {TAKEN_BACK_NOTE}"))
        _invocation(session, trigger, next(at), S.FAILED, (1, "abandoned"), (2, "failed"))
        _invocation(session, trigger, next(at), S.CANCELLED)
        _invocation(session, trigger, next(at), S.SKIPPED)
        _invocation(session, trigger, next(at), S.MISSED)
        _invocation(session, trigger, next(at), S.MISSED)
        _invocation(session, trigger, next(at), S.PENDING)
        _invocation(session, trigger, next(at), S.RUNNING, (1, None))
        for status in ("delivered", "delivered", "failed", "pending"):
            _alert(session, status, _at(8, 9))
    samples = served.samples()
    assert _by_label(samples, "cronbeat_invocations_total") == {
        "succeeded": 2, "failed": 1, "cancelled": 1, "skipped": 1, "missed": 2}
    assert _by_label(samples, "cronbeat_attempts_total") == {
        "succeeded": 1, "failed": 1, "error": 1, "abandoned": 2}
    assert _by_label(samples, "cronbeat_alerts_total") == {"delivered": 2, "failed": 1}
    assert _by_label(samples, "cronbeat_invocations_in_flight") == {"pending": 1, "running": 1}
    assert served.families()["cronbeat_invocations"].type == "counter"


def test_lateness_histogram_counts_first_attempts_of_scheduled_runs_only(
    served: Served,
) -> None:
    trigger = add_trigger(served.db)
    with served.db.begin() as session:
        at = _minutes()
        for late_s in (0.2, 0.5, 3, 45, 4000, -2):  # -2: started early, counted as 0
            _invocation(session, trigger, next(at), S.SUCCEEDED, (late_s, "succeeded"))
        # A retry: its first attempt's lateness counts, not the second's.
        _invocation(session, trigger, next(at), S.SUCCEEDED, (1.5, "error"),
                    (300, "succeeded"))
        # Not yet observed: its first attempt is still open.
        _invocation(session, trigger, next(at), S.RUNNING, (2, None))
        # Not scheduled runs: run now, a replay.
        _invocation(session, trigger, next(at), S.SUCCEEDED, (100, "succeeded"), manual=True)
        original = _invocation(session, trigger, next(at), S.FAILED, (1, "failed"))
        _invocation(session, trigger, next(at), S.SUCCEEDED, (200, "succeeded"), manual=True,
                    replay_of=original)
    # A backfill of a past occurrence, run 5,000 s after its time.
    with served.db.begin() as session:
        done = backfill(session, "t1", "p1", trigger, start=_at(8, 8, 0), end=_at(8, 8, 1),
                        now=_at(8, 10), retention_days=30, dry_run=False)
        (key,) = done.created
        session.execute(update(Invocation).where(Invocation.id == key.id)
                        .values(status=S.SUCCEEDED, attempt=1))
        session.execute(insert(InvocationAttempt).values(
            invocation_id=key.id, scheduled_for=key.scheduled_for, number=1,
            started_at=key.scheduled_for + dt.timedelta(seconds=5000), outcome="succeeded"))
    samples = served.samples("cronbeat_start_lateness_seconds")
    # Observed: 0.2, 0.5, 3, 45, 4000, 0 and 1.5 s (the original's 1 s failure too).
    assert _by_label(samples, "cronbeat_start_lateness_seconds_bucket") == {
        "0.5": 3, "1.0": 4, "2.0": 5, "5.0": 6, "10.0": 6, "30.0": 6, "60.0": 7,
        "120.0": 7, "300.0": 7, "600.0": 7, "1800.0": 7, "3600.0": 7, "+Inf": 8}
    assert samples[("cronbeat_start_lateness_seconds_count", ())] == 8
    assert samples[("cronbeat_start_lateness_seconds_sum", ())] == 4051.2
    assert served.families()["cronbeat_start_lateness_seconds"].type == "histogram"


def _counted_before(served: Served) -> dt.datetime | None:
    with served.db.begin() as session:
        return session.execute(select(HistoryState.counted_before)).scalar()


def test_counters_never_go_down_as_maintenance_closes_hours_drops_days_and_triggers_go(
    served: Served,
) -> None:
    """Retention 3 days: at 03-10 12:00, 03-04 expires; at 03-12 12:00, 03-08; at
    03-13 12:00, 03-09. Rows enter the history at their scheduled time unless said."""
    # Not due: deleting one records no missed occurrence.
    a, b = (add_trigger(served.db, next_run_at=NOW + dt.timedelta(days=30)) for _ in "ab")
    with served.db.begin() as session:
        for day in (4, 8, 9, 10):
            assert partitions.add_day(session.connection(), dt.date(2026, 3, day))
        _invocation(session, a, _at(4, 8), S.SUCCEEDED, (2, "succeeded"))
        _invocation(session, b, _at(4, 9), S.FAILED, (20, "error"), (40, "failed"))
        _invocation(session, a, _at(8, 8), S.SUCCEEDED, (0.4, "succeeded"))
        _invocation(session, b, _at(8, 9), S.MISSED)
        # A long retry: it keeps the hour it was created in, and every later one, live.
        waiting = _invocation(session, a, _at(9, 6, 30), S.PENDING, (7, "error"))
        _invocation(session, b, _at(10, 11, 30), S.SUCCEEDED, (90, "succeeded"))
        _alert(session, "delivered", _at(1, 8))  # older than the retention: pruned
        _alert(session, "failed", _at(8, 8))
    seen = [served.counters()]
    before = seen[0]
    assert _by_label(before, "cronbeat_invocations_total") == {
        "succeeded": 3, "failed": 1, "cancelled": 0, "skipped": 0, "missed": 1}
    assert _by_label(before, "cronbeat_attempts_total") == {
        "succeeded": 3, "failed": 1, "error": 2, "abandoned": 0}
    assert _by_label(before, "cronbeat_alerts_total") == {"delivered": 1, "failed": 1}
    assert before[("cronbeat_start_lateness_seconds_sum", ())] == 119.4  # 2+20+0.4+7+90

    # 03-04 is dropped before any hour is closed: its rows go to counter_totals as they
    # leave. The first close counts the rest, up to the retry's hour.
    report = served.maintain(NOW)
    assert (report.dropped, report.rows_dropped, report.alerts_deleted) == (
        [dt.date(2026, 3, 4)], 2, 1)
    assert _counted_before(served) == _at(9, 6)
    seen.append(served.counters())
    after = seen[-1]
    assert after == {**before, ("cronbeat_history_rows_dropped_total", ()): 2,
                     ("cronbeat_history_partitions_dropped_total", ()): 1}

    with served.db.begin() as session:
        delete_trigger(session, "t1", "p1", b, now=NOW)
    seen.append(served.counters())
    assert seen[-1] == after

    # The retry succeeds: its second attempt starts at 12:01; the next run closes every
    # hour up to 12:00, and changes no counter.
    with served.db.begin() as session:
        session.execute(update(Invocation).where(Invocation.id == waiting)
                        .values(status=S.SUCCEEDED, attempt=2))
        session.execute(insert(InvocationAttempt).values(
            invocation_id=waiting, scheduled_for=_at(9, 6, 30), number=2,
            started_at=_at(10, 12, 1), outcome="succeeded"))
    seen.append(served.counters())
    finished = seen[-1]
    assert finished == {
        **after, ("cronbeat_invocations_total", (("status", "succeeded"),)): 4,
        ("cronbeat_attempts_total", (("outcome", "succeeded"),)): 4}
    served.maintain(NOW + dt.timedelta(hours=1))
    assert _counted_before(served) == _at(10, 12)
    seen.append(served.counters())
    assert seen[-1] == finished

    # After an outage, three missed occurrences of closed hours are recorded at 13:05,
    # and a backfill runs two: every one counts at the next scrape.
    with served.db.begin() as session:
        for minute in (0, 5, 10):
            _invocation(session, a, _at(9, 8, minute), S.MISSED, created_at=_at(10, 13, 5))
        done = backfill(session, "t1", "p1", a, start=_at(9, 9), end=_at(9, 9, 10),
                        now=_at(10, 13, 5), retention_days=RETENTION_DAYS, dry_run=False)
        assert [key.scheduled_for for key in done.created] == [_at(9, 9), _at(9, 9, 5)]
        for key in done.created:
            session.execute(update(Invocation).where(Invocation.id == key.id)
                            .values(status=S.SUCCEEDED, attempt=1))
            session.execute(insert(InvocationAttempt).values(
                invocation_id=key.id, scheduled_for=key.scheduled_for, number=1,
                started_at=func.now(), outcome="succeeded"))
    seen.append(served.counters())
    recorded = seen[-1]
    assert recorded == {
        **finished, ("cronbeat_invocations_total", (("status", "missed"),)): 1 + 3,
        ("cronbeat_invocations_total", (("status", "succeeded"),)): 4 + 2,
        ("cronbeat_attempts_total", (("outcome", "succeeded"),)): 4 + 2}

    # A missed occurrence of 03-08 recorded at 03-12 11:30, not counted by any closed
    # hour yet, when 03-08 is dropped at 12:00: it stays counted.
    with served.db.begin() as session:
        _invocation(session, a, _at(8, 10), S.MISSED, created_at=_at(12, 11, 30))
    seen.append(served.counters())
    late = seen[-1]
    assert late == {**recorded, ("cronbeat_invocations_total", (("status", "missed"),)): 5}
    assert _counted_before(served) == _at(10, 12)
    report = served.maintain(NOW + dt.timedelta(days=2))
    assert (report.dropped, report.rows_dropped) == ([dt.date(2026, 3, 8)], 3)
    assert _counted_before(served) == _at(12, 11)
    seen.append(served.counters())
    assert seen[-1] == {**late, ("cronbeat_history_rows_dropped_total", ()): 5,
                        ("cronbeat_history_partitions_dropped_total", ()): 2}

    # 03-09 goes too: the retry, the missed rows, the backfill (recorded today by the
    # database's clock: live until dropped).
    report = served.maintain(NOW + dt.timedelta(days=3))
    assert (report.dropped, report.rows_dropped) == ([dt.date(2026, 3, 9)], 6)
    seen.append(served.counters())
    assert seen[-1] == {**late, ("cronbeat_history_rows_dropped_total", ()): 11,
                        ("cronbeat_history_partitions_dropped_total", ()): 3}
    for earlier, later in itertools.pairwise(seen):
        assert all(later[key] >= value for key, value in earlier.items())


def test_an_alert_pruned_before_an_hour_closed_over_it_stays_counted(served: Served) -> None:
    """A pending alert of 03-01 07:10 (still retrying) keeps that hour open; the
    delivered one of 08:00, older than the retention, is pruned uncounted."""
    with served.db.begin() as session:
        _alert(session, "pending", _at(1, 7, 10))
        _alert(session, "delivered", _at(1, 8))
    assert _by_label(served.counters(), "cronbeat_alerts_total") == {
        "delivered": 1, "failed": 0}
    assert served.maintain(NOW).alerts_deleted == 1
    assert _counted_before(served) == _at(1, 7)
    assert _by_label(served.counters(), "cronbeat_alerts_total") == {
        "delivered": 1, "failed": 0}
    with served.db.begin() as session:
        assert session.execute(select(func.count()).select_from(Alert)).scalar_one() == 1
