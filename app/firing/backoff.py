"""When to try a failed delivery again (pure: the time and the randomness are arguments)."""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable

# A target may ask for any Retry-After; an hour is the longest we hold an invocation
# back for it, so a typo such as "Retry-After: 86400000" cannot park a run for years.
MAX_RETRY_AFTER_S = 3600.0


def backoff_delay_s(attempt: int, base_s: float, cap_s: float, rand: Callable[[], float]) -> float:
    """Return the delay before the attempt after ``attempt`` (1-based): full jitter.

    The delay is uniform in ``[0, min(cap_s, base_s * 2 ** (attempt - 1)))``, so retries
    of many invocations failing together spread out instead of arriving in waves.
    ``rand`` returns a float in ``[0, 1)`` (``random.random``).

    Returns:
        The delay in seconds, never negative and never above ``cap_s``.
    """
    assert attempt >= 1, "attempts are numbered from 1"
    # min() before the power would overflow a float for very high attempt numbers.
    exponent = min(attempt - 1, 62)
    ceiling = min(cap_s, base_s * float(2**exponent))
    return max(0.0, ceiling * rand())


def retry_after_s(header: str | None, now: dt.datetime) -> float | None:
    """Return the wait a ``Retry-After`` header asks for, in seconds from ``now``.

    Both forms of RFC 9110 are understood: delay-seconds and an HTTP-date. A date in the
    past means "now" (0). The result is capped at :data:`MAX_RETRY_AFTER_S`.

    Returns:
        The seconds to wait, or None when the header is absent or malformed.
    """
    if header is None or not header.strip():
        return None
    value = header.strip()
    # ASCII only: "²" and "١٢" are digits to str.isdigit(), and the RFC means 0-9.
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are always GMT; parsedate_to_datetime leaves "-0000" naive.
        when = when.replace(tzinfo=dt.UTC)
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER_S)


def next_retry_delay_s(
    attempt: int,
    base_s: float,
    cap_s: float,
    rand: Callable[[], float],
    retry_after: float | None = None,
) -> float:
    """Return the delay before the next attempt: jittered backoff, floored by Retry-After.

    The target's ``Retry-After`` is a floor: we never come back sooner than it asked,
    even when the backoff would.

    Returns:
        The delay in seconds.
    """
    delay = backoff_delay_s(attempt, base_s, cap_s, rand)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return delay
