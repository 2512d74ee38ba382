"""When to try a failed delivery again (pure: the time and the randomness are arguments)."""

from __future__ import annotations

from collections.abc import Callable

from app.delivery.retry_after import MAX_RETRY_AFTER_S


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
