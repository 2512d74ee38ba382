"""The console's next runs: UTC and local, and which ones a DST rule moved or repeats."""

from __future__ import annotations

import datetime as dt

from api.console.views import next_runs
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
