"""Applying what happened to triggers' alert states, and raising their alerts (the outbox).

:func:`observe` takes the caller's ``Session`` and never commits. The worker and the
dispatcher run it in the transaction that records what happened (a run's finish, a
tick's batch, the sweep's take-back), inside a savepoint (:func:`observe_isolated`):
the outcome and its alert commit together, so no crash between the two can lose an
alert, and an error of the alerts' own can never undo a run. Each alert is a row of
``alerts``, one per enabled channel of the project, delivered after the commit by
``cronbeat.deliver_alert``.

Only projects with an enabled channel are watched: for any other project this writes
nothing (the worker learns it from the claim's ``watched`` column, so an unwatched run
costs no statement at all). A trigger's state row is locked while its events apply;
every caller locks them in trigger id order, so concurrent observers cannot deadlock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from app.alerting.rules import (
    DEFAULT_RULE,
    AlertKind,
    Condition,
    Observation,
    Rule,
    State,
    step,
)
from app.models import Alert, AlertChannel, AlertRule, Invocation, Trigger, TriggerAlertState
from app.queries import alerts as alert_queries

log = logging.getLogger(__name__)

#: An alert's body quotes at most this much of the run's last error.
ERROR_CHARS = 1000

Scope = tuple[str, str]


@dataclasses.dataclass(frozen=True)
class Event:
    """One thing that happened to a scheduled run of a trigger."""

    tenant_id: str
    project_id: str
    trigger_id: uuid.UUID
    observation: Observation
    scheduled_for: dt.datetime
    invocation_id: uuid.UUID | None = None
    #: The invocation's status when observed (the alert's body says it).
    status: str | None = None
    error: str | None = None
    #: How late the run's first attempt started, seconds (None: unknown).
    late_s: float | None = None

    @property
    def scope(self) -> Scope:
        return (self.tenant_id, self.project_id)


def watched_scopes(session: Session, scopes: Iterable[Scope]) -> set[Scope]:
    """The (tenant, project) pairs among ``scopes`` that have an enabled channel."""
    wanted = sorted(set(scopes))
    if not wanted:
        return set()
    rows = session.execute(
        select(AlertChannel.tenant_id, AlertChannel.project_id).distinct()
        .where(AlertChannel.enabled,
               tuple_(AlertChannel.tenant_id, AlertChannel.project_id).in_(wanted))
    )
    return {(row.tenant_id, row.project_id) for row in rows}


def rule_of(rows: Sequence[AlertRule]) -> Rule:
    """The rule in force given a trigger's rule and its project's (either may be absent)."""
    own = [row for row in rows if row.trigger_id is not None]
    project = [row for row in rows if row.trigger_id is None]
    chosen = (own or project or [None])[0]
    if chosen is None:
        return DEFAULT_RULE
    return Rule(on_failure=chosen.on_failure, failures_in_a_row=chosen.failures_in_a_row,
                on_missed=chosen.on_missed, late_after_s=chosen.late_after_s,
                on_recovery=chosen.on_recovery, on_didnt_run=chosen.on_didnt_run)


def observe(
    session: Session, events: Sequence[Event], now: dt.datetime, *,
    public_url: str | None = None, published: bool = False,
) -> list[uuid.UUID]:
    """Apply ``events`` to their triggers' alert states and record the alerts they raise.

    ``published``: the caller publishes the alerts' messages right after the commit (the
    watchdog publishes them otherwise, and again if that publish is lost).

    Returns:
        The ids of the alerts recorded, to publish after the commit.
    """
    channels = _enabled_channels(session, {event.scope for event in events})
    events = [event for event in events if channels.get(event.scope)]
    if not events:
        return []
    by_trigger: dict[uuid.UUID, list[Event]] = defaultdict(list)
    for event in events:
        by_trigger[event.trigger_id].append(event)
    trigger_ids = sorted(by_trigger)
    states = _lock_states(session, [by_trigger[t][0] for t in trigger_ids])
    rules = _rules(session, [by_trigger[t][0] for t in trigger_ids])
    names = {row.id: row.name for row in session.execute(
        select(Trigger.id, Trigger.name).where(Trigger.id.in_(trigger_ids)))}
    alerts: list[dict[str, Any]] = []
    for trigger_id in trigger_ids:
        before = state = states[trigger_id]
        rule = rule_of(rules.get(trigger_id, []))
        for event in sorted(by_trigger[trigger_id], key=lambda e: e.scheduled_for):
            state, kind = step(state, event.observation, rule,
                               scheduled_for=event.scheduled_for, late_s=event.late_s)
            if kind is not None:
                for channel_id in channels[event.scope]:
                    alerts.append(_alert_row(event, kind, state, channel_id,
                                             names.get(trigger_id), now, public_url,
                                             published))
        unrun = [e.scheduled_for for e in by_trigger[trigger_id]
                 if e.observation is Observation.DIDNT_RUN]
        if unrun:
            session.execute(
                update(TriggerAlertState)
                .where(TriggerAlertState.trigger_id == trigger_id)
                .values(didnt_run_seen_for=func.greatest(
                    TriggerAlertState.didnt_run_seen_for, max(unrun)))
                .execution_options(synchronize_session=False)
            )
        if state != before:
            session.execute(
                update(TriggerAlertState)
                .where(TriggerAlertState.trigger_id == trigger_id)
                .values(condition=state.condition.value if state.condition else None,
                        consecutive_failures=state.consecutive_failures,
                        last_outcome_for=state.last_outcome_for,
                        **({"changed_at": now} if state.condition != before.condition else {}))
                .execution_options(synchronize_session=False)
            )
    if alerts:
        session.execute(pg_insert(Alert), alerts)
    return [row["id"] for row in alerts]


def observe_isolated(
    session: Session, events: Sequence[Event], now: dt.datetime, *,
    public_url: str | None = None, published: bool = False,
    log_ids: dict[str, Any] | None = None,
) -> list[uuid.UUID]:
    """:func:`observe` in a savepoint of the caller's transaction (a run's finish, a
    tick's batch): the alerts commit with what they are about, or not at all.

    An error of the alerts' own (a bug, a row that breaks a constraint) is logged and
    rolled back to the savepoint, so an alert can never undo the run or tick it is
    about; a lost connection is raised, since the caller's transaction is lost too and
    its retry observes again.

    Returns:
        The ids of the alerts recorded (none after an error), to publish after commit.
    """
    try:
        with session.begin_nested():
            return observe(session, events, now, public_url=public_url, published=published)
    except DBAPIError as exc:
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            raise
        failure: Exception = exc
    except Exception as exc:
        failure = exc
    log.error("alerts: could not record the alerts of %d events; left unraised",
              len(events), exc_info=failure, extra={"action": "alert.observe_failed",
                                                    **(log_ids or {})})
    return []


def observe_watched(
    session: Session, events: Sequence[Event], now: dt.datetime, *,
    public_url: str | None = None, with_ids: bool = False,
) -> list[uuid.UUID]:
    """:func:`observe_isolated` for the events of watched projects only; with
    ``with_ids``, each event's invocation id is looked up from its occurrence first.

    For what a tick or a take-back recorded (missed runs, runs failed for a lost
    worker), in the transaction that recorded it; the watchdog publishes the alerts.
    """
    watched = watched_scopes(session, [event.scope for event in events])
    events = [event for event in events if event.scope in watched]
    if events and with_ids:
        ids = invocations_of(session, [(e.trigger_id, e.scheduled_for) for e in events])
        events = [dataclasses.replace(
            e, invocation_id=ids.get((e.trigger_id, e.scheduled_for))) for e in events]
    if not events:
        return []
    return observe_isolated(session, events, now, public_url=public_url)


def _enabled_channels(session: Session, scopes: set[Scope]) -> dict[Scope, list[uuid.UUID]]:
    if not scopes:
        return {}
    rows = session.execute(
        select(AlertChannel.id, AlertChannel.tenant_id, AlertChannel.project_id)
        .where(AlertChannel.enabled,
               tuple_(AlertChannel.tenant_id, AlertChannel.project_id).in_(sorted(scopes)))
        .order_by(AlertChannel.created_at, AlertChannel.id)
    )
    found: dict[Scope, list[uuid.UUID]] = defaultdict(list)
    for row in rows:
        found[(row.tenant_id, row.project_id)].append(row.id)
    return found


def _lock_states(session: Session, firsts: Sequence[Event]) -> dict[uuid.UUID, State]:
    """Each trigger's state, its row created if missing and locked until commit."""
    rows = alert_queries.lock_alert_states(
        session, [(e.trigger_id, e.tenant_id, e.project_id) for e in firsts])
    return {row.trigger_id: State(
        condition=Condition(row.condition) if row.condition else None,
        consecutive_failures=row.consecutive_failures,
        last_outcome_for=row.last_outcome_for,
    ) for row in rows}


def _rules(session: Session, firsts: Sequence[Event]) -> dict[uuid.UUID, list[AlertRule]]:
    """The rules that may apply to each trigger: its own and its project's."""
    scopes = sorted({e.scope for e in firsts})
    rows = session.execute(
        select(AlertRule).where(
            tuple_(AlertRule.tenant_id, AlertRule.project_id).in_(scopes),
            or_(AlertRule.trigger_id.is_(None),
                AlertRule.trigger_id.in_([e.trigger_id for e in firsts])),
        )
    ).scalars().all()
    found: dict[uuid.UUID, list[AlertRule]] = {}
    for event in firsts:
        found[event.trigger_id] = [
            row for row in rows
            if (row.tenant_id, row.project_id) == event.scope
            and row.trigger_id in (None, event.trigger_id)
        ]
    return found


def iso_utc(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def console_link(public_url: str | None, project_id: str,
                 trigger_id: uuid.UUID | None) -> str:
    """The trigger's console page (the project's, without a trigger): absolute with
    CRONBEAT_PUBLIC_URL, else a path."""
    path = (f"/console/projects/{project_id}/triggers/{trigger_id}" if trigger_id
            else f"/console/projects/{project_id}")
    return (public_url or "").rstrip("/") + path


def _alert_row(
    event: Event, kind: AlertKind, state: State, channel_id: uuid.UUID, name: str | None,
    now: dt.datetime, public_url: str | None, published: bool,
) -> dict[str, Any]:
    alert_id = uuid.uuid4()
    invocation = None
    if event.invocation_id is not None:
        invocation = {
            "id": str(event.invocation_id),
            "scheduled_for": iso_utc(event.scheduled_for),
            "status": event.status,
            "last_error": (event.error or None) and event.error[:ERROR_CHARS],
        }
    body = {
        "type": f"trigger.{kind.value}",
        "alert_id": str(alert_id),
        "created_at": iso_utc(now),
        "tenant_id": event.tenant_id,
        "project_id": event.project_id,
        "trigger": {"id": str(event.trigger_id), "name": name},
        "occurrence": iso_utc(event.scheduled_for),
        "invocation": invocation,
        "condition": state.condition.value if state.condition else None,
        "consecutive_failures": state.consecutive_failures,
        "late_s": round(event.late_s, 3) if event.late_s is not None else None,
        "link": console_link(public_url, event.project_id, event.trigger_id),
    }
    return {
        "id": alert_id, "tenant_id": event.tenant_id, "project_id": event.project_id,
        "channel_id": channel_id, "trigger_id": event.trigger_id,
        "invocation_id": event.invocation_id, "kind": kind.value, "status": "pending",
        "body": body, "next_attempt_at": now, "created_at": now,
        "published_at": now if published else None,
    }


def invocations_of(
    session: Session, pairs: Sequence[tuple[uuid.UUID, dt.datetime]]
) -> dict[tuple[uuid.UUID, dt.datetime], uuid.UUID]:
    """The invocation ids of (trigger id, scheduled_for) pairs (the occurrence key)."""
    if not pairs:
        return {}
    rows = session.execute(
        select(Invocation.id, Invocation.trigger_id, Invocation.scheduled_for)
        .where(tuple_(Invocation.trigger_id, Invocation.scheduled_for).in_(list(pairs)))
    )
    return {(row.trigger_id, row.scheduled_for): row.id for row in rows}

