"""A cron expression in English, true to how the engine reads its day fields (pure).

cron-descriptor phrases the parts ("At 02:30 AM", "every 2 days", "Monday through
Friday"), but it joins the two day fields by its own rule. Cronie's rule (see
:class:`app.schedule.cron.DaySpec`) decides here instead: when both day fields restrict the days
and either starts with ``*``, a day must match both ("every 2 days, and only on
Monday": the odd days of the month that are Mondays); when both restrict and neither
starts with ``*``, either is enough ("on day 13 of the month, or on Friday").
"""

from __future__ import annotations

import re

from cron_descriptor import ExpressionDescriptor, Options

from app.schedule import cron

_ALL_DAYS_OF_MONTH = sum(1 << day for day in range(1, 32))
_ALL_WEEKDAYS = (1 << 7) - 1
# What cron-descriptor says for the time of "0 0 * * <weekdays>", before the weekdays.
_MIDNIGHT = "At 12:00 AM, "
_STEP_FROM_STAR = re.compile(r"\*/(\d+)")


def _phrase(expression: str) -> str:
    options = Options()
    options.use_24hour_time_format = False
    options.verbose = False
    return str(ExpressionDescriptor(expression, options).get_description())


def _restricts_days_of_month(days: cron.DaySpec) -> bool:
    return (days.dom != _ALL_DAYS_OF_MONTH or days.dom_last or days.dom_last_weekday
            or bool(days.dom_nearest))


def _restricts_weekdays(days: cron.DaySpec) -> bool:
    return days.dow != _ALL_WEEKDAYS or bool(days.dow_nth) or bool(days.dow_last)


def _weekdays(field: str) -> str:
    """The weekday field as a phrase that starts with "on" ("on Monday through Friday")."""
    text = _phrase(f"0 0 * * {field}").removeprefix(_MIDNIGHT)
    text = text.removeprefix("only ")
    return text if text.startswith("on ") else f"on {text}"


def describe_cron(cron_expression: str) -> str:
    """Describe an expression in English ("At 02:30 AM"); the expression if it cannot."""
    expression = " ".join(cron_expression.split())
    expression = cron.MACROS.get(expression.lower(), expression)
    try:
        days = cron.parse(expression).days
        fields = expression.split()
        both = _restricts_days_of_month(days) and _restricts_weekdays(days)
        text = _phrase(" ".join([*fields[:4], "*"]) if both else expression)
        step = _STEP_FROM_STAR.fullmatch(fields[2])
        if step is not None:
            # "*/2" is the 1st, 3rd, 5th ... of each month (the 31st and the next 1st
            # both fire), not every other day forever.
            count = step.group(1)
            text = text.replace(f"every {count} days",
                                f"every {count} days of the month from the 1st", 1)
        if not both:
            return text
        joiner = "and only" if days.day_and else "or"
        return f"{text}, {joiner} {_weekdays(fields[4])}"
    except Exception:  # a description is a nicety; never fail a request for it
        return cron_expression
