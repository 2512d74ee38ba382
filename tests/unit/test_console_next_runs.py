"""The console's next runs (UTC and local, DST marks), trigger states and durations (pure)."""

from __future__ import annotations

import datetime as dt

from api.console.display import next_runs, seconds, trigger_state
from app.models import Trigger

UTC = dt.UTC
GAP = "moved: its wall time falls in a DST gap"
REPEAT = "second pass of an hour DST repeats"


def _trigger(cron_expression: str, *, enabled: bool = True) -> Trigger:
    return Trigger(cron_expression=cron_expression, timezone="Europe/Berlin", enabled=enabled)


def test_a_fixed_time_run_in_the_spring_gap_is_marked_moved() -> None:
    runs = next_runs(_trigger("30 2 * * *"), dt.datetime(2026, 3, 27, 12, 0, tzinfo=UTC))
    assert [(r["utc"], r["dst"]) for r in runs[:3]] == [
        (dt.datetime(2026, 3, 28, 1, 30, tzinfo=UTC), None),   # 02:30 CET
        (dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC), GAP),     # 03:00 CEST, for 02:30
        (dt.datetime(2026, 3, 30, 0, 30, tzinfo=UTC), None),   # 02:30 CEST
    ]
    assert len(runs) == 10 and runs[1]["local"].isoformat() == "2026-03-29T03:00:00+02:00"


def test_an_interval_run_in_the_repeated_autumn_hour_is_marked_as_its_second_pass() -> None:
    runs = next_runs(_trigger("30 * * * *"), dt.datetime(2026, 10, 24, 23, 45, tzinfo=UTC))
    assert [(r["local"].isoformat(), r["dst"]) for r in runs[:3]] == [
        ("2026-10-25T02:30:00+02:00", None),
        ("2026-10-25T02:30:00+01:00", REPEAT),
        ("2026-10-25T03:30:00+01:00", None),
    ]


def test_a_paused_trigger_has_no_next_runs() -> None:
    assert next_runs(_trigger("* * * * *", enabled=False),
                     dt.datetime(2026, 1, 1, tzinfo=UTC)) == []


NOW = dt.datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def _once(run_at: dt.datetime, **values: object) -> Trigger:
    return Trigger(run_at=run_at, timezone="UTC", **values)


def test_each_state_and_the_actions_it_offers() -> None:
    states = {
        "enabled": _trigger("0 * * * *", enabled=True),
        "due cron": Trigger(cron_expression="0 * * * *", timezone="UTC", enabled=True,
                            next_run_at=NOW - dt.timedelta(seconds=20)),
        "paused": Trigger(cron_expression="0 * * * *", timezone="UTC", enabled=False,
                          pause_note="db migration"),
        "due once": _once(NOW - dt.timedelta(minutes=1), enabled=True,
                          next_run_at=NOW - dt.timedelta(minutes=1)),
        "done": _once(NOW - dt.timedelta(hours=1), enabled=False, next_run_at=None,
                      last_scheduled_for=NOW - dt.timedelta(hours=1)),
        "held": _once(NOW + dt.timedelta(seconds=5), enabled=False, next_run_at=None,
                      last_scheduled_for=NOW + dt.timedelta(seconds=5)),
        "one-time off": _once(NOW + dt.timedelta(days=1), enabled=False, next_run_at=None),
    }
    assert {name: (s.name, s.text, s.can_pause, s.can_resume) for name, s in (
        (name, trigger_state(trigger, NOW)) for name, trigger in states.items())} == {
        "enabled": ("enabled", "enabled", True, False),
        "due cron": ("due", "due since 2026-05-04 11:59:40 UTC: the next tick records its"
                     " run", True, False),
        "paused": ("paused", "paused: db migration", False, True),
        "due once": ("due", "due since 2026-05-04 11:59:00 UTC: the next tick records its"
                     " run", True, False),
        "done": ("done", "done: it fired once, at 2026-05-04 11:00:00 UTC", False, False),
        "held": ("due", "due at 2026-05-04 12:00:05 UTC: its run is held for that instant",
                 False, False),
        "one-time off": ("paused", "paused", False, True),
    }
    assert next_runs(states["done"], NOW) == []
    held = next_runs(states["held"], NOW)
    assert [(r["utc"], r["due"]) for r in held] == [(NOW + dt.timedelta(seconds=5), False)]
    due = next_runs(states["due cron"], NOW)
    assert [(r["utc"], r["due"]) for r in due[:2]] == [
        (NOW - dt.timedelta(seconds=20), True), (NOW + dt.timedelta(hours=1), False)]
    assert len(due) == 10


def test_durations_read_in_the_unit_that_fits() -> None:
    assert [seconds(v) for v in (None, 0.0424, 1.5, 12.34, 242, 7380)] == [
        "-", "0.042 s", "1.5 s", "12.3 s", "4 min 2 s", "2 h 3 min"]
