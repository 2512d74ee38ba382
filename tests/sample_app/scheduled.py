"""A user's tasks that declare their own schedules (``cronbeat sync``), every form: a cron,
an interval and a one-time declaration, two on one task, another app's (not collected
with this one), and a list (``SCHEDULES``).

``SAMPLE_DEPLOY=2`` is the next deploy of this code: "sum-often" is no longer declared
and "daily-report" runs at 10 instead of 9. ``SAMPLE_DEPLOY=typo`` declares one more
that the API refuses (minute 61).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from celery import Celery

import cronbeat

app = Celery("sample-scheduled")
other = Celery("sample-other")
DEPLOY = os.environ.get("SAMPLE_DEPLOY", "1")
NEXT_DEPLOY = DEPLOY == "2"


@cronbeat.schedule("0 10 * * 1-5" if NEXT_DEPLOY else "0 9 * * 1-5",
                   timezone="Europe/Berlin", name="daily-report", args=[1, 2],
                   queue="sample", outcome=True)
@app.task(name="sample.report")
def report(x: int, y: int) -> int:
    """The weekday report."""
    return x + y


@cronbeat.schedule(every=dt.timedelta(minutes=15), kwargs={"scale": 3}, overlap="skip",
                   misfire="skip", misfire_grace_s=60)
@app.task(name="sample.sum")
def total(*, scale: int = 1) -> int:
    """A sum every quarter of an hour (its trigger is named after the task)."""
    return scale


if not NEXT_DEPLOY:
    total = cronbeat.schedule("*/5 * * * *", name="sum-often", max_attempts=1)(total)


@cronbeat.schedule(run_at=dt.datetime(2031, 1, 1, 9, 0), timezone="Europe/Berlin",
                   name="new-year", description="once, in 2031")
@app.task(name="sample:greet")
def greet() -> str:
    """Once: its task name's colon is not a trigger name's, and it is named anyway."""
    return "happy new year"


@app.task(name="sample.never")
def never() -> None:
    """Declared with a typo the API refuses (minute 61) when cronbeat sync checks it."""


if DEPLOY == "typo":
    never = cronbeat.schedule("61 * * * *", name="bad-minute")(never)


@cronbeat.schedule("0 0 * * *", name="others")
@other.task(name="other.task")
def others() -> None:
    """Another app's task: cronbeat sync tests.sample_app.scheduled:app leaves it out."""


def _plain(**_: Any) -> None:
    """Not a task: the list names it as Celery would, by module and function."""


SCHEDULES = [
    cronbeat.Schedule("sample.add", every=60, args=[1, 1], name="add-every-minute"),
    cronbeat.Schedule(_plain, cron="30 2 * * *"),
]
