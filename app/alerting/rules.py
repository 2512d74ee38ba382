"""When a trigger's alert goes out: its rule, its alert state, and one step of it (pure).

A trigger is either fine (no condition) or in one alerting *condition*: failing (N
scheduled runs in a row failed), missed (a run was recorded missed), late (a run started
later than the rule allows) or didnt_run (an expected occurrence has no invocation, or
its invocation never started, within the trigger's grace). An alert goes out when the
condition changes, never once per run or attempt:

* entering a condition alerts with its kind (if the rule asks for it);
* staying in it alerts nothing: the fifth failure in a row of a failing trigger, the
  second missed run of a missed one;
* a ``missed`` run of a trigger already in ``didnt_run`` alerts nothing: it is the same
  outage, seen again by the dispatcher once it is back;
* the first success after any condition alerts ``recovered`` (if the rule asks), once,
  and clears it; a ``late`` trigger recovers only through a run that started on time.

Only scheduled runs count: a manual run (run now, replay, backfill) changes nothing.
Outcomes are applied in the order of their occurrences: one older than the last one
applied (runs of a trigger finishing out of order) is ignored for the failure count.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum


class Condition(enum.StrEnum):
    FAILING = "failing"
    MISSED = "missed"
    LATE = "late"
    DIDNT_RUN = "didnt_run"


class AlertKind(enum.StrEnum):
    """What an alert says; the ``type`` of its body is ``trigger.<kind>``."""

    FAILING = "failing"
    MISSED = "missed"
    LATE = "late"
    DIDNT_RUN = "didnt_run"
    RECOVERED = "recovered"
    #: Sent by the test endpoint only.
    TEST = "test"


class Observation(enum.StrEnum):
    #: A scheduled run ended succeeded / failed (its final status).
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: A scheduled occurrence was recorded missed.
    MISSED = "missed"
    #: A scheduled run's first attempt started (late or not: see ``late_s``).
    STARTED = "started"
    #: The watchdog found an expected occurrence that did not run within its grace.
    DIDNT_RUN = "didnt_run"


@dataclasses.dataclass(frozen=True)
class Rule:
    """What alerts a trigger sends (its own rule, else its project's, else these)."""

    on_failure: bool = True
    #: Alert once this many scheduled runs in a row failed.
    failures_in_a_row: int = 1
    on_missed: bool = True
    #: Alert when a run's first attempt starts more than this after its time (None: off).
    late_after_s: int | None = None
    on_recovery: bool = True
    on_didnt_run: bool = True


DEFAULT_RULE = Rule()


@dataclasses.dataclass(frozen=True)
class State:
    """A trigger's alert state, as stored in trigger_alert_state."""

    condition: Condition | None = None
    consecutive_failures: int = 0
    #: The newest occurrence whose outcome was applied (None: none yet).
    last_outcome_for: dt.datetime | None = None


FINE = State()


def step(
    state: State, observation: Observation, rule: Rule, *,
    scheduled_for: dt.datetime, late_s: float | None = None,
) -> tuple[State, AlertKind | None]:
    """Apply one observation of the run of ``scheduled_for``; the new state and alert.

    ``late_s`` is how late the run's first attempt started (STARTED, and SUCCEEDED when
    the success came from that first attempt; None when unknown).
    """
    if observation in (Observation.SUCCEEDED, Observation.FAILED):
        if state.last_outcome_for is not None and scheduled_for < state.last_outcome_for:
            return state, None
        state = dataclasses.replace(state, last_outcome_for=scheduled_for)
    if observation is Observation.FAILED:
        failures = state.consecutive_failures + 1
        state = dataclasses.replace(state, consecutive_failures=failures)
        if (rule.on_failure and failures >= rule.failures_in_a_row
                and state.condition is not Condition.FAILING):
            return dataclasses.replace(state, condition=Condition.FAILING), AlertKind.FAILING
        return state, None
    if observation is Observation.SUCCEEDED:
        state = dataclasses.replace(state, consecutive_failures=0)
        if state.condition is None:
            return state, None
        if state.condition is Condition.LATE and not _on_time(rule, late_s):
            return state, None
        return (dataclasses.replace(state, condition=None),
                AlertKind.RECOVERED if rule.on_recovery else None)
    if observation is Observation.STARTED:
        if state.condition is None and _is_late(rule, late_s):
            return dataclasses.replace(state, condition=Condition.LATE), AlertKind.LATE
        return state, None
    if observation is Observation.MISSED:
        if not rule.on_missed or state.condition in (Condition.MISSED, Condition.DIDNT_RUN):
            return state, None
        return dataclasses.replace(state, condition=Condition.MISSED), AlertKind.MISSED
    assert observation is Observation.DIDNT_RUN
    if not rule.on_didnt_run or state.condition is Condition.DIDNT_RUN:
        return state, None
    return dataclasses.replace(state, condition=Condition.DIDNT_RUN), AlertKind.DIDNT_RUN


def _is_late(rule: Rule, late_s: float | None) -> bool:
    return rule.late_after_s is not None and late_s is not None and late_s > rule.late_after_s


def _on_time(rule: Rule, late_s: float | None) -> bool:
    return late_s is not None and not _is_late(rule, late_s)


def describe(rule: Rule) -> str:
    """The rule in words, for the console: what alerts it sends."""
    parts = []
    if rule.on_failure:
        parts.append("after a failed run" if rule.failures_in_a_row == 1
                     else f"after {rule.failures_in_a_row} failed runs in a row")
    if rule.on_missed:
        parts.append("on a missed run")
    if rule.late_after_s is not None:
        parts.append(f"on a start over {rule.late_after_s} s late")
    if rule.on_didnt_run:
        parts.append("when a run did not happen")
    if rule.on_recovery:
        parts.append("once on recovery")
    return "; ".join(parts) if parts else "no alerts"
