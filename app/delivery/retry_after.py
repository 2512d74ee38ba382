"""What a target's ``Retry-After`` header asks for (pure: the time is an argument)."""

from __future__ import annotations

import datetime as dt
import email.utils

# A target may ask for any Retry-After; an hour is the longest we hold an invocation
# back for it, so a typo such as "Retry-After: 86400000" cannot park a run for years.
MAX_RETRY_AFTER_S = 3600.0


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
