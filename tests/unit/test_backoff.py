"""Retry delays: full-jitter exponential backoff, floored by the target's Retry-After."""

from __future__ import annotations

import datetime as dt

import pytest

from app.delivery.retry_after import MAX_RETRY_AFTER_S, retry_after_s
from app.firing.backoff import backoff_delay_s, next_retry_delay_s

NOW = dt.datetime(2026, 3, 7, 5, 0, 0, tzinfo=dt.UTC)


def fixed(value: float):
    return lambda: value


@pytest.mark.parametrize(
    ("attempt", "base_s", "cap_s", "rand", "expected"),
    [
        # The ceiling doubles per attempt: base * 2 ** (attempt - 1).
        (1, 2.0, 300.0, 0.5, 1.0),
        (2, 2.0, 300.0, 0.5, 2.0),
        (3, 2.0, 300.0, 0.5, 4.0),
        (4, 2.0, 300.0, 0.5, 8.0),
        # The cap bounds the ceiling, not the jitter.
        (9, 2.0, 300.0, 0.5, 150.0),
        (100, 2.0, 300.0, 0.5, 150.0),
        # Full jitter: anything from 0 up to (not including) the ceiling.
        (3, 2.0, 300.0, 0.0, 0.0),
        (3, 2.0, 300.0, 0.999, 7.992),
        # A zero base never waits (tests use it).
        (5, 0.0, 0.0, 0.7, 0.0),
        # Huge attempt numbers neither overflow nor exceed the cap.
        (10_000, 1.0, 60.0, 0.25, 15.0),
    ],
)
def test_backoff_delay_is_jitter_times_capped_exponential_ceiling(
    attempt: int, base_s: float, cap_s: float, rand: float, expected: float
) -> None:
    assert backoff_delay_s(attempt, base_s, cap_s, fixed(rand)) == pytest.approx(expected)


def test_backoff_rejects_attempt_zero_as_a_programming_error() -> None:
    with pytest.raises(AssertionError):
        backoff_delay_s(0, 1.0, 10.0, fixed(0.5))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("2", 2.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("999999999", MAX_RETRY_AFTER_S),
        # Unicode digits are digits to str.isdigit() but not to float() or the RFC.
        ("²", None),
        ("1²", None),
        ("١٢", None),
        ("\uff11\uff12", None),  # fullwidth 12
        # HTTP-date forms (RFC 9110), relative to NOW.
        ("Sat, 07 Mar 2026 05:00:30 GMT", 30.0),
        ("Sat, 07 Mar 2026 04:59:00 GMT", 0.0),
        ("Sun, 08 Mar 2026 05:00:00 GMT", MAX_RETRY_AFTER_S),
        ("Sat, 07 Mar 2026 05:01:00 -0000", 60.0),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(
    header: str | None, expected: float | None
) -> None:
    assert retry_after_s(header, NOW) == expected


@pytest.mark.parametrize(
    ("rand", "retry_after", "expected"),
    [
        (0.5, None, 2.0),
        # Retry-After is a floor: never come back sooner than the target asked...
        (0.5, 10.0, 10.0),
        # ...but a longer backoff still wins.
        (0.5, 1.0, 2.0),
        (0.0, 2.0, 2.0),
        # Even a floor passed in unchecked is capped.
        (0.5, 10 * MAX_RETRY_AFTER_S, MAX_RETRY_AFTER_S),
    ],
)
def test_next_retry_delay_takes_the_larger_of_backoff_and_retry_after(
    rand: float, retry_after: float | None, expected: float
) -> None:
    assert next_retry_delay_s(2, 2.0, 300.0, fixed(rand), retry_after) == expected
