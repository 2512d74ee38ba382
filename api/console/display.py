"""What the console's pages say of a trigger and its runs (pure: the time is an argument).

* A trigger's **state**: ``enabled``; ``due`` (its next occurrence has come and its run
  is not recorded yet, or a one-time run is held for its instant); ``done`` (a one-time
  trigger that fired: nothing to pause or resume); ``paused``.
* A run's **timing**: when its first attempt started, how late that was (a scheduled
  run from its occurrence, any other from when it was asked for), and how long the run
  took from that start to its end, retries included.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from app.editing.definitions import is_finished_one_time, is_taken_ahead_one_time
from app.enums import InvocationOrigin
from app.models import Invocation, InvocationAttempt, Trigger
from app.schedule.kinds import local_time, schedule_of

#: How many next runs a trigger's page lists.
NEXT_RUNS = 10


@dataclasses.dataclass(frozen=True)
class TriggerState:
    """What the console says of a trigger and which actions it offers."""

    #: ``enabled``, ``due``, ``done`` or ``paused``.
    name: str
    #: The words the page shows.
    text: str
    #: Pause (a running schedule) or Resume (a paused one) is offered.
    can_pause: bool
    can_resume: bool


def trigger_state(trigger: Trigger, now: dt.datetime) -> TriggerState:
    """The console's state of ``trigger`` at ``now``."""
    if is_taken_ahead_one_time(trigger, now):
        return TriggerState("due", f"due at {_utc(trigger.run_at)}: its run is held for"
                            " that instant", can_pause=False, can_resume=False)
    if is_finished_one_time(trigger):
        return TriggerState("done", f"done: it fired once, at {_utc(trigger.run_at)}",
                            can_pause=False, can_resume=False)
    if not trigger.enabled:
        note = f": {trigger.pause_note}" if trigger.pause_note else ""
        return TriggerState("paused", f"paused{note}", can_pause=False, can_resume=True)
    if trigger.next_run_at is not None and trigger.next_run_at <= now:
        return TriggerState("due", f"due since {_utc(trigger.next_run_at)}: the next tick"
                            " records its run", can_pause=True, can_resume=False)
    return TriggerState("enabled", "enabled", can_pause=True, can_resume=False)


def _utc(moment: dt.datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def local(moment: dt.datetime | None, zone: str) -> dt.datetime | None:
    """``moment`` on the zone's wall clock (None stays None)."""
    return None if moment is None else local_time(moment, zone)


def next_runs(trigger: Trigger, now: dt.datetime) -> list[dict[str, Any]]:
    """The next runs, each in UTC and local time, marked where a DST rule moved it.

    A due occurrence whose run the tick has not recorded yet comes first. None while
    paused (resuming counts from then) or once a one-time trigger has fired.
    """
    state = trigger_state(trigger, now)
    if state.name in ("paused", "done"):
        return []
    schedule, zone = schedule_of(trigger), trigger.timezone
    due = ([trigger.next_run_at] if trigger.next_run_at is not None
           and trigger.next_run_at <= now else [])
    moments = [*due, *schedule.times(now, NEXT_RUNS - len(due))]
    return [{"utc": moment, "local": local(moment, zone),
             "dst": schedule.dst_note(moment, zone), "due": moment <= now}
            for moment in moments]


@dataclasses.dataclass(frozen=True)
class RunTiming:
    """When a run started, how late, and how long it took (None: not yet)."""

    started_at: dt.datetime | None
    late_s: float | None
    duration_s: float | None


def run_timing(invocation: Invocation, attempts: list[InvocationAttempt]) -> RunTiming:
    """The timing of ``invocation`` from its attempts (in number order)."""
    started = attempts[0].started_at if attempts else invocation.started_at
    if started is None:
        return RunTiming(None, None, None)
    since = (invocation.scheduled_for if invocation.origin is InvocationOrigin.SCHEDULED
             else invocation.created_at)
    ended = invocation.finished_at if invocation.status.is_final else None
    return RunTiming(started, (started - since).total_seconds(),
                     None if ended is None else (ended - started).total_seconds())


def seconds(value: float | None) -> str:
    """A duration in words a table cell holds: ``0.042 s``, ``12.3 s``, ``4 min 2 s``."""
    if value is None:
        return "-"
    if abs(value) < 1:
        return f"{value:.3f} s"
    if abs(value) < 60:
        return f"{value:.1f} s"
    whole = round(value)
    if abs(whole) < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"
