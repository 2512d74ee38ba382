"""The alert rules' one step (pure): one alert per change of condition, never per run."""

from __future__ import annotations

import datetime as dt

import pytest

from app.alerting.rules import (
    FINE,
    AlertKind,
    Condition,
    Observation,
    Rule,
    State,
    describe,
    step,
)

T0 = dt.datetime(2026, 3, 7, 5, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


def run(rule: Rule, *observations: Observation | tuple[Observation, float],
        state: State = FINE) -> tuple[State, list[AlertKind | None]]:
    """Apply observations one minute apart; the final state and each step's alert."""
    alerts = []
    for index, item in enumerate(observations):
        observation, late_s = item if isinstance(item, tuple) else (item, None)
        state, alert = step(state, observation, rule, scheduled_for=T0 + index * MINUTE,
                            late_s=late_s)
        alerts.append(alert)
    return state, alerts


def test_three_failures_in_a_row_alert_once_at_the_third_and_a_success_recovers() -> None:
    f, s = Observation.FAILED, Observation.SUCCEEDED
    state, alerts = run(Rule(failures_in_a_row=3), f, f, f, f, f, s, s)
    assert alerts == [None, None, AlertKind.FAILING, None, None, AlertKind.RECOVERED, None]
    assert state == State(condition=None, consecutive_failures=0,
                          last_outcome_for=T0 + 6 * MINUTE)


def test_a_success_between_failures_resets_the_count() -> None:
    f, s = Observation.FAILED, Observation.SUCCEEDED
    state, alerts = run(Rule(failures_in_a_row=2), f, s, f, s)
    assert alerts == [None, None, None, None]
    assert state.consecutive_failures == 0


def test_the_default_rule_alerts_at_the_first_failure() -> None:
    _, alerts = run(Rule(), Observation.FAILED, Observation.FAILED, Observation.SUCCEEDED)
    assert alerts == [AlertKind.FAILING, None, AlertKind.RECOVERED]


def test_recovery_can_be_off_and_still_clears_the_condition() -> None:
    state, alerts = run(Rule(on_recovery=False), Observation.FAILED, Observation.SUCCEEDED,
                        Observation.FAILED)
    assert alerts == [AlertKind.FAILING, None, AlertKind.FAILING]
    assert state.condition is Condition.FAILING


def test_an_outcome_older_than_the_last_applied_one_is_ignored() -> None:
    state, alert = step(FINE, Observation.SUCCEEDED, Rule(), scheduled_for=T0 + MINUTE)
    older, alert = step(state, Observation.FAILED, Rule(), scheduled_for=T0)
    assert (older, alert) == (state, None)


def test_missed_alerts_once_and_not_after_didnt_run() -> None:
    m = Observation.MISSED
    _, alerts = run(Rule(), m, m, Observation.SUCCEEDED)
    assert alerts == [AlertKind.MISSED, None, AlertKind.RECOVERED]
    _, alerts = run(Rule(), Observation.DIDNT_RUN, Observation.DIDNT_RUN, m,
                    Observation.SUCCEEDED)
    assert alerts == [AlertKind.DIDNT_RUN, None, None, AlertKind.RECOVERED]
    _, alerts = run(Rule(on_missed=False, on_didnt_run=False), m, Observation.DIDNT_RUN)
    assert alerts == [None, None]


def test_late_alerts_once_and_recovers_only_through_an_on_time_success() -> None:
    rule = Rule(late_after_s=60)
    s = Observation.SUCCEEDED
    state, alerts = run(
        rule, (Observation.STARTED, 61.0), (s, 61.0), (Observation.STARTED, 90.0),
        (s, None), (Observation.STARTED, 2.0), (s, 2.0))
    assert alerts == [AlertKind.LATE, None, None, None, None, AlertKind.RECOVERED]
    assert state.condition is None


@pytest.mark.parametrize("late_s", [None, 0.0, 60.0])
def test_a_start_within_the_rule_or_without_one_is_not_late(late_s: float | None) -> None:
    assert step(FINE, Observation.STARTED, Rule(late_after_s=60), scheduled_for=T0,
                late_s=late_s) == (FINE, None)
    assert step(FINE, Observation.STARTED, Rule(), scheduled_for=T0,
                late_s=3600.0) == (FINE, None)


def test_a_failing_trigger_that_misses_alerts_the_new_condition() -> None:
    state, alerts = run(Rule(), Observation.FAILED, Observation.MISSED,
                        Observation.DIDNT_RUN)
    assert alerts == [AlertKind.FAILING, AlertKind.MISSED, AlertKind.DIDNT_RUN]
    assert state.condition is Condition.DIDNT_RUN


def test_a_rule_is_described_in_words() -> None:
    assert describe(Rule()) == ("after a failed run; on a missed run; when a run did not"
                                " happen; once on recovery")
    assert describe(Rule(failures_in_a_row=3, on_missed=False, late_after_s=300,
                         on_didnt_run=False, on_recovery=False)) == (
        "after 3 failed runs in a row; on a start over 300 s late")
    assert describe(Rule(on_failure=False, on_missed=False, on_didnt_run=False,
                         on_recovery=False)) == "no alerts"
