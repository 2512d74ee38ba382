"""The operator's numbers, computed from the database (right however many processes run).

:func:`collect` reads one snapshot in one read-only transaction; :func:`render` turns it
into the Prometheus text format. Every query is served by an index: the due backlog by
``ix_triggers_due``, the last hour's invocations by the BRIN index on ``created_at``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import extract, func, select
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.orm import Session

from app.deploys import processes
from app.enums import InvocationStatus
from app.history import partitions
from app.models import (
    Alert,
    DispatcherHeartbeat,
    HistoryState,
    Invocation,
    SchedulerState,
    Trigger,
)

#: The window of the "last hour" metrics, in seconds.
WINDOW_S = 3600
QUANTILES = (0.5, 0.9, 0.99)
ALERT_STATUSES = ("pending", "delivered", "failed")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    now: dt.datetime
    due_backlog: int
    oldest_due_lateness_s: float
    invocations_by_status: dict[str, int]
    lateness_quantiles_s: dict[float, float | None]
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


def collect(session: Session) -> Snapshot:
    """Read every metric at one instant (the transaction's now())."""
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
    lateness = extract("epoch", Invocation.started_at - Invocation.scheduled_for)
    quantiles = session.execute(
        select(
            func.percentile_cont(array(QUANTILES)).within_group(lateness)
        ).where(
            Invocation.created_at > since,
            Invocation.started_at.is_not(None),
            Invocation.manual.is_(False),
        )
    ).scalar_one()
    heartbeat = session.execute(
        select(DispatcherHeartbeat.last_tick_at, DispatcherHeartbeat.last_tick_duration_ms)
    ).one()
    state = session.execute(
        select(SchedulerState.active_deployment_id, SchedulerState.generation)
    ).one()
    days = partitions.existing_days(session.connection())
    history = session.execute(select(
        HistoryState.rows_dropped, HistoryState.partitions_dropped, HistoryState.last_run_at,
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
        lateness_quantiles_s=dict(zip(QUANTILES, quantiles or [None] * len(QUANTILES),
                                      strict=True)),
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
    )


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self):
        s = self.snapshot
        yield GaugeMetricFamily(
            "cronbeat_due_backlog", "Enabled triggers due now and not yet dispatched.",
            value=s.due_backlog)
        yield GaugeMetricFamily(
            "cronbeat_oldest_due_lateness_seconds",
            "How late the oldest due trigger is (0 when nothing is due).",
            value=s.oldest_due_lateness_s)
        by_status = GaugeMetricFamily(
            "cronbeat_invocations_last_hour",
            "Invocations recorded in the last hour, by current status.", labels=["status"])
        for status, count in sorted(s.invocations_by_status.items()):
            by_status.add_metric([status], count)
        yield by_status
        lateness = GaugeMetricFamily(
            "cronbeat_start_lateness_seconds",
            "Scheduled time to attempt start, quantiles over the last hour's scheduled runs.",
            labels=["quantile"])
        for quantile, value in s.lateness_quantiles_s.items():
            if value is not None:
                lateness.add_metric([str(quantile)], value)
        yield lateness
        if s.last_tick_at is not None:
            yield GaugeMetricFamily(
                "cronbeat_last_tick_timestamp_seconds", "When the last dispatcher tick ran.",
                value=s.last_tick_at.timestamp())
            yield GaugeMetricFamily(
                "cronbeat_last_tick_age_seconds", "Seconds since the last dispatcher tick.",
                value=(s.now - s.last_tick_at).total_seconds())
        if s.last_tick_duration_ms is not None:
            yield GaugeMetricFamily(
                "cronbeat_last_tick_duration_seconds", "How long the last tick took.",
                value=s.last_tick_duration_ms / 1000)
        yield GaugeMetricFamily(
            "cronbeat_scheduler_generation", "Deploy activations so far.", value=s.generation)
        active = GaugeMetricFamily(
            "cronbeat_active_deployment_info",
            "The active deployment (absent until one is activated).",
            labels=["deployment_id"])
        if s.active_deployment_id is not None:
            active.add_metric([s.active_deployment_id], 1)
        yield active
        live = GaugeMetricFamily(
            "cronbeat_live_processes",
            "Workers, dispatchers and beats seen in the last 30 s, by deployment, kind and "
            "role (active, standby, superseded).", labels=["deployment_id", "kind", "role"])
        for (deployment_id, kind, role), count in sorted(s.live_processes.items()):
            live.add_metric([deployment_id, kind, role], count)
        yield live
        yield GaugeMetricFamily(
            "cronbeat_live_processes_with_problem",
            "Live processes reporting a problem (an active worker consuming nothing, a "
            "stalled loop).", value=s.processes_with_problem)
        yield GaugeMetricFamily(
            "cronbeat_history_partitions",
            "Day partitions of the run history (CRONBEAT_HISTORY_RETENTION_DAYS kept, a few"
            " ahead).", value=s.history_partitions)
        if s.history_oldest_day is not None:
            yield GaugeMetricFamily(
                "cronbeat_history_oldest_day_timestamp_seconds",
                "The start (UTC) of the oldest day of run history kept.",
                value=partitions.day_start(s.history_oldest_day).timestamp())
        yield GaugeMetricFamily(
            "cronbeat_history_rows_dropped", "Invocations removed by retention so far (their"
            " counts stay in the daily rollups).", value=s.history_rows_dropped)
        yield GaugeMetricFamily(
            "cronbeat_history_partitions_dropped", "Day partitions dropped by retention so far.",
            value=s.history_partitions_dropped)
        alerts = GaugeMetricFamily(
            "cronbeat_alerts_last_hour",
            "Alerts raised in the last hour, by delivery status (delivered, failed: gave up,"
            " pending: not delivered yet).", labels=["status"])
        for status, count in sorted(s.alerts_by_status.items()):
            alerts.add_metric([status], count)
        yield alerts
        yield GaugeMetricFamily(
            "cronbeat_alerts_pending", "Alerts not delivered yet (waiting or retrying).",
            value=s.alerts_pending)
        yield GaugeMetricFamily(
            "cronbeat_oldest_pending_alert_age_seconds",
            "How long the oldest undelivered alert has waited (0 when none).",
            value=s.oldest_pending_alert_age_s)
        if s.history_last_maintenance_at is not None:
            yield GaugeMetricFamily(
                "cronbeat_history_maintenance_age_seconds",
                "Seconds since the history's maintenance last ran.",
                value=(s.now - s.history_last_maintenance_at).total_seconds())


def render(snapshot: Snapshot) -> bytes:
    """Return ``snapshot`` in the Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)
