"""A user's celery beat schedule, every form ``cronbeat import celery-beat`` handles or
refuses. The tasks are tests.sample_app.tasks' (the sample worker runs them)."""

from __future__ import annotations

import datetime as dt

from celery import Celery
from celery.schedules import crontab, schedule, solar

app = Celery("sample-beat")
app.conf.timezone = "Europe/Berlin"
app.conf.beat_schedule = {
    "add every 2 s": {"task": "sample.add", "schedule": dt.timedelta(seconds=2),
                      "args": (2, 3), "kwargs": {"scale": 10}, "options": {"queue": "sample"}},
    "add-number": {"task": "sample.add", "schedule": 3.0, "args": (1, 1)},
    "add-schedule": {"task": "sample.add", "schedule": schedule(dt.timedelta(minutes=5)),
                     "args": [4, 4]},
    "weekday-mornings": {"task": "sample.add", "args": (0, 0),
                         "schedule": crontab(minute=0, hour=9, day_of_week="mon-fri")},
    "names-and-ranges": {"task": "sample.add", "args": (0, 1),
                         "schedule": crontab(minute="*/15", hour="8-18",
                                             month_of_year="jan,jul")},
    "first-of-month": {"task": "sample.add", "args": (0, 2),
                       "schedule": crontab(minute=0, hour=0, day_of_month="1")},
    "sundays": {"task": "sample.add", "args": (0, 3),
                "schedule": crontab(minute=0, hour=0, day_of_week="sun")},
    "expiring": {"task": "sample.add", "args": (0, 4), "schedule": crontab(minute=30),
                 "options": {"expires": 120, "priority": 5}},
    "relative": {"task": "sample.add", "args": (0, 5),
                 "schedule": schedule(dt.timedelta(minutes=10), relative=True)},
    "friday the 13th": {"task": "sample.add", "args": (1, 3),
                        "schedule": crontab(minute=0, hour=0, day_of_month=13,
                                            day_of_week="fri")},
    "sunset": {"task": "sample.add", "args": (0, 6),
               "schedule": solar("sunset", 52.52, 13.40)},
    "half-second": {"task": "sample.add", "args": (0, 7),
                    "schedule": dt.timedelta(milliseconds=500)},
    "not-json": {"task": "sample.add", "args": (dt.date(2026, 1, 1), 1), "schedule": 60},
}
