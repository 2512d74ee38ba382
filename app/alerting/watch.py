"""The alert watchdog's "didn't run" detection (its lock and the due alerts it publishes are
in app.queries.alerts).

The watchdog runs in the workers (tasks.alerts), not in the dispatcher or beat, so that
a dispatcher or a beat that is down is what it reports, not what silences it. One
watchdog at a time does the work (``app.queries.alerts.try_watchdog_lock``). Each
function takes the caller's ``Session`` and never commits.

A trigger *didn't run* when an occurrence it expected has no started run within its
grace (``misfire_grace_s``, at least the dispatcher's minimum grace):

* its ``next_run_at`` lies further back than that: no dispatcher recorded it (the
  dispatcher or beat is down, or stuck); read from ``ix_triggers_due``, so the cost is
  in proportion to the overdue triggers;
* or a scheduled invocation of it is still pending, never started, that long after its
  time: it was recorded, but no worker took it (the fleet is stranded, or far behind);
  read from ``ix_invocations_unstarted``, over the last :data:`LOOKBACK` only.

Only triggers of watched projects (an enabled channel) not already in ``didnt_run`` are
reported, each occurrence once (``trigger_alert_state.didnt_run_seen_for``, also when
the rule sends no alert for it), at most ``limit`` a pass.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import exists, func, literal, or_, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from app.alerting.observe import Event
from app.alerting.rules import Condition, Observation
from app.enums import InvocationStatus
from app.models import AlertChannel, Invocation, Trigger, TriggerAlertState

#: Unstarted runs older than this are not looked at (their trigger was reported then).
LOOKBACK = dt.timedelta(days=1)


def _grace(min_grace_s: int) -> object:
    return func.make_interval(0, 0, 0, 0, 0, 0,
                              func.greatest(Trigger.misfire_grace_s, literal(min_grace_s)))


def _watched_and_not_reported(occurrence: Any) -> list[Any]:
    """The trigger's project is watched, and neither the trigger (in ``didnt_run``) nor
    this occurrence (reported before, alerted or not) was reported already."""
    return [
        exists().where(AlertChannel.tenant_id == Trigger.tenant_id,
                       AlertChannel.project_id == Trigger.project_id, AlertChannel.enabled),
        ~exists().where(TriggerAlertState.trigger_id == Trigger.id, or_(
            TriggerAlertState.condition == Condition.DIDNT_RUN.value,
            TriggerAlertState.didnt_run_seen_for >= occurrence)),
    ]


def didnt_run(session: Session, now: dt.datetime, min_grace_s: int, limit: int) -> list[Event]:
    """The watched triggers whose expected occurrence did not run within its grace."""
    earliest = now - dt.timedelta(seconds=min_grace_s)
    overdue = session.execute(
        select(Trigger.id, Trigger.tenant_id, Trigger.project_id, Trigger.next_run_at)
        .where(Trigger.enabled, Trigger.next_run_at.is_not(None),
               Trigger.next_run_at < earliest,
               Trigger.next_run_at + _grace(min_grace_s) < now,
               *_watched_and_not_reported(Trigger.next_run_at))
        .order_by(Trigger.next_run_at)
        .limit(limit)
    ).all()
    events = [Event(tenant_id=row.tenant_id, project_id=row.project_id, trigger_id=row.id,
                    observation=Observation.DIDNT_RUN, scheduled_for=row.next_run_at)
              for row in overdue]
    seen = {event.trigger_id for event in events}
    unstarted = session.execute(
        select(Invocation.id, Invocation.trigger_id, Invocation.tenant_id,
               Invocation.project_id, Invocation.scheduled_for)
        .ext(distinct_on(Invocation.trigger_id))
        .join(Trigger, Trigger.id == Invocation.trigger_id)
        .where(Invocation.status == InvocationStatus.PENDING, Invocation.attempt == 0,
               Invocation.manual.is_(False),
               Invocation.scheduled_for < earliest, Invocation.scheduled_for >= now - LOOKBACK,
               Invocation.scheduled_for + _grace(min_grace_s) < now,
               *_watched_and_not_reported(Invocation.scheduled_for))
        .order_by(Invocation.trigger_id, Invocation.scheduled_for)
        .limit(limit)
    ).all()
    for row in unstarted:
        if row.trigger_id not in seen and len(events) < limit:
            events.append(Event(
                tenant_id=row.tenant_id, project_id=row.project_id, trigger_id=row.trigger_id,
                observation=Observation.DIDNT_RUN, scheduled_for=row.scheduled_for,
                invocation_id=row.id, status=InvocationStatus.PENDING.value,
                error="recorded, but no worker started it"))
    return events
