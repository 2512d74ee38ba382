"""Turn rows into the dicts the output schemas dump.

A webhook's header values and URL password are credentials more often than not
(``Authorization``, ``X-Api-Key``, ``https://user:token@...``): every answer shows the
header names and the URL with those values replaced by :data:`REDACTED`. Only the
signing secret is ever shown, once, when it is created.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from api.state import state
from app.models import Invocation, InvocationAttempt, Trigger
from app.schedule.kinds import local_time, schedule_of
from app.targets import target_of


def describe_schedule(trigger: Trigger) -> str:
    """Describe a trigger's schedule in words."""
    return schedule_of(trigger).describe(trigger.timezone)


def trigger_view(
    trigger: Trigger, last: Invocation | None, *, signing_secret: str | None = None
) -> dict[str, Any]:
    """Return a trigger as the API shows it: credentials redacted (see the module doc),
    the signing secret only when given, to show once."""
    target = target_of(trigger.target_kind).view(trigger)
    view = {
        column: getattr(trigger, column)
        for column in (
            "id", "project_id", "name", "description", "enabled", "cron_expression",
            "timezone", "run_at", "interval_s", "start_at", "next_run_at", "payload",
            "message_template",
            "max_attempts", "backoff_base_s", "backoff_cap_s", "timeout_s",
            "misfire_policy", "misfire_grace_s", "overlap_policy", "ref", "pause_note",
            "version", "created_at", "updated_at",
        )
    }
    view["target"] = target
    # The dispatcher never takes a grace below one tick + 30 s (Settings.min_misfire_grace_s).
    view["effective_misfire_grace_s"] = max(trigger.misfire_grace_s,
                                            state().settings.min_misfire_grace_s)
    view["schedule_description"] = describe_schedule(trigger)
    view["last_invocation"] = None if last is None else {
        "id": last.id, "status": last.status, "scheduled_for": last.scheduled_for,
        "finished_at": last.finished_at, "manual": last.manual,
    }
    view["signing_secret"] = signing_secret
    return view


def preview_view(trigger: Trigger, now: dt.datetime, count: int) -> dict[str, Any]:
    """Return the trigger's next ``count`` fire times (none left for a past one-time)."""
    times = schedule_of(trigger).times(now, count)
    return {
        "cron_expression": trigger.cron_expression,
        "run_at": trigger.run_at,
        "interval_s": trigger.interval_s,
        "start_at": trigger.start_at,
        "timezone": trigger.timezone,
        "description": describe_schedule(trigger),
        "next_run_times": [
            {"utc": moment.astimezone(dt.UTC).isoformat(),
             "local": local_time(moment, trigger.timezone).isoformat()}
            for moment in times
        ],
    }


_INVOCATION_COLUMNS = (
    "id", "trigger_id", "project_id", "scheduled_for", "status", "manual", "replay_of",
    "attempt",
    "cancel_requested", "enqueued_at", "run_after", "started_at", "finished_at",
    "last_error", "response_status", "created_at",
)


def invocation_view(
    invocation: Invocation, attempts: list[InvocationAttempt] | None = None
) -> dict[str, Any]:
    """Return an invocation as the API shows it; with ``attempts``, the detailed view."""
    view = {column: getattr(invocation, column) for column in _INVOCATION_COLUMNS}
    view["origin"] = invocation.origin
    if attempts is not None:
        view["response_excerpt"] = invocation.response_excerpt
        view["deployment_id"] = invocation.deployment_id
        view["attempts"] = [
            {column: getattr(attempt, column) for column in (
                "number", "deployment_id", "started_at", "finished_at", "outcome",
                "response_status", "error")}
            for attempt in attempts
        ]
    return view
