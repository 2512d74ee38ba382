"""A trigger's last days as a row of squares (drawn as inline SVG by the templates)."""

from __future__ import annotations

import datetime as dt
from typing import Any

SQUARE_PX = 8
GAP_PX = 2
#: The first status that a day has decides its colour.
COLOURS = (("failed", "#c62828"), ("missed", "#ef8f00"), ("succeeded", "#2e7d32"))
NO_RUNS = "#d7d7d7"


def strip(counts: dict[dt.date, dict[str, int]], first_day: dt.date, days: int) -> dict[str, Any]:
    """One square a day from ``first_day``: red with a failure, amber a miss, green ok."""
    squares = []
    for offset in range(days):
        day = first_day + dt.timedelta(days=offset)
        day_counts = counts.get(day, {})
        colour = next((c for status, c in COLOURS if day_counts.get(status)), NO_RUNS)
        parts = [f"{n} {status}" for status, n in sorted(day_counts.items()) if n]
        squares.append({"x": offset * (SQUARE_PX + GAP_PX), "colour": colour,
                        "day": day.isoformat(),
                        "title": f"{day.isoformat()}: {', '.join(parts) or 'no runs'}"})
    return {"days": days, "size": SQUARE_PX, "width": days * (SQUARE_PX + GAP_PX) - GAP_PX,
            "squares": squares}
