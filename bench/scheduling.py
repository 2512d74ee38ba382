"""Micro-benchmark of next_run_at: prints microseconds per call (not a test).

Run with ``python -m bench.scheduling`` from the repository root.
"""

from __future__ import annotations

import timeit
from datetime import UTC, datetime, timedelta

from app.schedule.scheduling import next_run_at

CASES: list[tuple[str, str]] = [
    ("*/5 * * * *", "UTC"),
    ("*/5 * * * *", "America/New_York"),
    ("30 2 * * *", "America/New_York"),
    ("0 9 * * 1-5", "Europe/London"),
    ("0 0 L * *", "Australia/Lord_Howe"),
    ("0 0 * 2 1#5", "Pacific/Chatham"),
]
CALLS = 20_000


def time_case(expression: str, zone: str, afters: list[datetime]) -> float:
    """Return the mean seconds per call over ``afters`` (parse and zone caches warm)."""
    next_run_at(expression, zone, afters[0])
    iterator = iter(afters)
    return timeit.timeit(lambda: next_run_at(expression, zone, next(iterator)), number=len(afters))


def main() -> None:
    """Time each case over many reference instants, so no result cache could hide a search."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    afters = [base + timedelta(minutes=17 * index) for index in range(CALLS)]
    for expression, zone in CASES:
        seconds = time_case(expression, zone, afters) / CALLS
        print(f"{expression:<14} {zone:<22} {seconds * 1e6:6.1f} us/call")


if __name__ == "__main__":
    main()
