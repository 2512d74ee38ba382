"""The operator's numbers, computed from the database (right however many processes run).

:func:`collect` reads one snapshot in one read-only transaction; :func:`render` turns it
into the Prometheus text format. Every query is served by an index: the due backlog by
``ix_triggers_due``, the last hour's invocations by the BRIN index on ``created_at``,
the counters' live part by the BRIN indexes on ``invocations.created_at`` and
``invocation_attempts.started_at`` (app.history.counters; the lateness's join reads the
invocations of the live first attempts' days only),
the in-flight runs by the partial indexes of pending and running invocations.

Every family is in every scrape, an empty database's included: a time that has not
happened yet (no tick, no partition) is NaN, and an age counts from
``history_state.watched_since`` until the first event, so "too old" alerts fire on an
installation where it never happened.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.deploys import processes
from app.enums import InvocationStatus
from app.history import counters, partitions
from app.history.counters import Family
from app.models import (
    Alert,
    DispatcherHeartbeat,
    HistoryState,
    Invocation,
    SchedulerState,
    Trigger,
)
from app.queries.locks import hold_history

#: The window of the "last hour" metrics, in seconds.
WINDOW_S = 3600
NAN = float("nan")
ALERT_STATUSES = ("pending", "delivered", "failed")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    now: dt.datetime
    due_backlog: int
    oldest_due_lateness_s: float
    invocations_by_status: dict[str, int]
    last_tick_at: dt.datetime | None
    last_tick_duration_ms: float | None
    active_deployment_id: str | None
    generation: int
    #: Live processes by (deployment id or "", kind, role).
    live_processes: dict[tuple[str, str, str], int] = dataclasses.field(default_factory=dict)
    #: Live processes that report a problem (what `cronbeat health` fails on).
    processes_with_problem: int = 0
    #: The history's day partitions (app.history), and what its maintenance dropped.
    history_partitions: int = 0
    history_oldest_day: dt.date | None = None
    history_rows_dropped: int = 0
    history_partitions_dropped: int = 0
    history_last_maintenance_at: dt.datetime | None = None
    #: Alerts raised in the last hour by status (pending, delivered, failed).
    alerts_by_status: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Alerts not delivered yet (waiting or retrying), and the age of the oldest.
    alerts_pending: int = 0
    oldest_pending_alert_age_s: float = 0.0
    #: The counters (app.history.counters), by (family, label).
    counts: counters.Counts = dataclasses.field(default_factory=counters.Counts)
    #: Invocations pending and running now.
    in_flight: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Where ages start before the first tick or maintenance run.
    watched_since: dt.datetime | None = None


def collect(session: Session) -> Snapshot:
    """Read every metric at one instant (the transaction's now()), in one snapshot.

    Call it first in its transaction (:func:`app.queries.locks.hold_history`).
    """
    hold_history(session)
    now = session.execute(select(func.now())).scalar_one()
    due = session.execute(
        select(func.count(), func.min(Trigger.next_run_at)).where(
            Trigger.enabled, Trigger.next_run_at.is_not(None), Trigger.next_run_at <= now
        )
    ).one()
    since = now - dt.timedelta(seconds=WINDOW_S)
    by_status = {status.value: 0 for status in InvocationStatus}
    for status, count in session.execute(
        select(Invocation.status, func.count())
        .where(Invocation.created_at > since)
        .group_by(Invocation.status)
    ):
        by_status[status.value] = count
    heartbeat = session.execute(
        select(DispatcherHeartbeat.last_tick_at, DispatcherHeartbeat.last_tick_duration_ms)
    ).one()
    state = session.execute(
        select(SchedulerState.active_deployment_id, SchedulerState.generation)
    ).one()
    days = partitions.existing_days(session.connection())
    history = session.execute(select(
        HistoryState.rows_dropped, HistoryState.partitions_dropped, HistoryState.last_run_at,
        HistoryState.watched_since,
    )).one()
    alerts_by_status = dict.fromkeys(ALERT_STATUSES, 0)
    for status, count in session.execute(
        select(Alert.status, func.count()).where(Alert.created_at > since)
        .group_by(Alert.status)
    ):
        alerts_by_status[status] = count
    pending = session.execute(
        select(func.count(), func.min(Alert.created_at)).where(Alert.status == "pending")
    ).one()
    live_processes: dict[tuple[str, str, str], int] = {}
    with_problem = 0
    for row in processes.live(session):
        key = (row.deployment_id or "", row.kind.value, row.role.value)
        live_processes[key] = live_processes.get(key, 0) + 1
        with_problem += row.problem is not None
    return Snapshot(
        now=now,
        due_backlog=due[0],
        oldest_due_lateness_s=(now - due[1]).total_seconds() if due[1] is not None else 0.0,
        invocations_by_status=by_status,
        last_tick_at=heartbeat.last_tick_at,
        last_tick_duration_ms=heartbeat.last_tick_duration_ms,
        active_deployment_id=state.active_deployment_id,
        generation=state.generation,
        live_processes=live_processes,
        processes_with_problem=with_problem,
        history_partitions=len(days),
        history_oldest_day=days[0] if days else None,
        history_rows_dropped=history.rows_dropped,
        history_partitions_dropped=history.partitions_dropped,
        history_last_maintenance_at=history.last_run_at,
        alerts_by_status=alerts_by_status,
        alerts_pending=pending[0],
        oldest_pending_alert_age_s=(now - pending[1]).total_seconds() if pending[1] else 0.0,
        counts=counters.read(session.connection()),
        in_flight=counters.in_flight(session.connection()),
        watched_since=history.watched_since,
    )


def _age_s(s: Snapshot, since: dt.datetime | None) -> float:
    """Seconds since ``since``, or since ``watched_since`` if it has not happened yet."""
    start = since or s.watched_since
    return (s.now - start).total_seconds() if start is not None else NAN


def _counter(s: Snapshot, name: str, doc: str, family: Family, label: str,
             values: tuple[str, ...]) -> CounterMetricFamily:
    metric = CounterMetricFamily(name, doc, labels=[label])
    for value in values:
        metric.add_metric([value], s.counts[family, value])
    return metric


def _lateness(s: Snapshot) -> HistogramMetricFamily:
    late = HistogramMetricFamily(
        "cronbeat_start_lateness_seconds",
        "Scheduled runs' first attempt start minus their scheduled time (manual, replayed"
        " and backfilled runs left out), counted once that attempt finished.")
    buckets = [(str(float(b)), s.counts[Family.LATENESS, counters.bucket_label(b)])
               for b in counters.LATENESS_BUCKETS_S]
    buckets.append(("+Inf", s.counts[Family.LATENESS, counters.INF]))
    late.add_metric([], buckets, sum_value=s.counts[Family.LATENESS, counters.SUM_MS] / 1000)
    return late


def _counters(s: Snapshot) -> list[Any]:
    return [
        _counter(s, "cronbeat_invocations", "Invocations finished, by final status (from"
                 " the history and what its retention removed).", Family.INVOCATIONS,
                 "status", counters.FINISHED),
        _counter(s, "cronbeat_attempts", "Attempts finished, by outcome (abandoned: the"
                 " sweep took the lease back, whatever the worker reported later).",
                 Family.ATTEMPTS, "outcome", counters.OUTCOMES),
        _counter(s, "cronbeat_alerts", "Alerts finished, by status (delivered, failed:"
                 " gave up).", Family.ALERTS, "status", counters.ALERT_STATUSES),
        _lateness(s),
        CounterMetricFamily(
            "cronbeat_history_rows_dropped", "Invocations removed by retention (their"
            " counts stay in the daily rollups and in the counters).",
            value=s.history_rows_dropped),
        CounterMetricFamily(
            "cronbeat_history_partitions_dropped", "Day partitions dropped by retention.",
            value=s.history_partitions_dropped),
    ]


def _gauges(s: Snapshot) -> list[Any]:
    by_status = GaugeMetricFamily(
        "cronbeat_invocations_last_hour",
        "Invocations recorded in the last hour, by current status.", labels=["status"])
    for status, count in sorted(s.invocations_by_status.items()):
        by_status.add_metric([status], count)
    in_flight = GaugeMetricFamily(
        "cronbeat_invocations_in_flight", "Invocations pending or running now.",
        labels=["status"])
    for status, count in sorted(s.in_flight.items()):
        in_flight.add_metric([status], count)
    active = GaugeMetricFamily(
        "cronbeat_active_deployment_info",
        "The active deployment (no sample until one is activated).",
        labels=["deployment_id"])
    if s.active_deployment_id is not None:
        active.add_metric([s.active_deployment_id], 1)
    live = GaugeMetricFamily(
        "cronbeat_live_processes",
        "Workers, dispatchers and beats seen in the last 30 s, by deployment, kind and "
        "role (active, standby, superseded).", labels=["deployment_id", "kind", "role"])
    for (deployment_id, kind, role), count in sorted(s.live_processes.items()):
        live.add_metric([deployment_id, kind, role], count)
    alerts = GaugeMetricFamily(
        "cronbeat_alerts_last_hour",
        "Alerts raised in the last hour, by delivery status (delivered, failed: gave up,"
        " pending: not delivered yet).", labels=["status"])
    for status, count in sorted(s.alerts_by_status.items()):
        alerts.add_metric([status], count)
    oldest_day = (partitions.day_start(s.history_oldest_day).timestamp()
                  if s.history_oldest_day is not None else NAN)
    gauge = GaugeMetricFamily
    return [
        gauge("cronbeat_due_backlog", "Enabled triggers due now and not yet dispatched.",
              value=s.due_backlog),
        gauge("cronbeat_oldest_due_lateness_seconds",
              "How late the oldest due trigger is (0 when nothing is due).",
              value=s.oldest_due_lateness_s),
        by_status,
        in_flight,
        gauge("cronbeat_last_tick_timestamp_seconds",
              "When the last dispatcher tick ran (NaN before the first).",
              value=s.last_tick_at.timestamp() if s.last_tick_at else NAN),
        gauge("cronbeat_last_tick_age_seconds", "Seconds since the last dispatcher tick"
              " (before the first: since history_state.watched_since).",
              value=_age_s(s, s.last_tick_at)),
        gauge("cronbeat_last_tick_duration_seconds",
              "How long the last tick took (NaN before the first).",
              value=s.last_tick_duration_ms / 1000
              if s.last_tick_duration_ms is not None else NAN),
        gauge("cronbeat_scheduler_generation", "Deploy activations so far.",
              value=s.generation),
        active,
        live,
        gauge("cronbeat_live_processes_with_problem",
              "Live processes reporting a problem (an active worker consuming nothing, a "
              "stalled loop).", value=s.processes_with_problem),
        gauge("cronbeat_history_partitions",
              "Day partitions of the run history (CRONBEAT_HISTORY_RETENTION_DAYS kept, a"
              " few ahead).", value=s.history_partitions),
        gauge("cronbeat_history_oldest_day_timestamp_seconds",
              "The start (UTC) of the oldest day of run history kept (NaN: no partition).",
              value=oldest_day),
        gauge("cronbeat_history_maintenance_age_seconds",
              "Seconds since the history's maintenance last ran (before its first run:"
              " since history_state.watched_since).",
              value=_age_s(s, s.history_last_maintenance_at)),
        alerts,
        gauge("cronbeat_alerts_pending", "Alerts not delivered yet (waiting or retrying).",
              value=s.alerts_pending),
        gauge("cronbeat_oldest_pending_alert_age_seconds",
              "How long the oldest undelivered alert has waited (0 when none).",
              value=s.oldest_pending_alert_age_s),
    ]


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        yield from _counters(self.snapshot)
        yield from _gauges(self.snapshot)


def render(snapshot: Snapshot) -> bytes:
    """Return ``snapshot`` in the Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)
