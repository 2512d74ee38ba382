"""A real django-celery-beat database for the import's tests, made by Django itself.

Run as ``python -m tests.support.django_beat DATABASE_URL FUTURE PAST`` (ISO instants):
it configures a minimal Django project on that database, runs django-celery-beat's own
migrations, and saves the periodic tasks of :func:`seed` through the Django ORM. It runs
in a process of its own so that Django's settings never reach the test processes.
"""

from __future__ import annotations

import datetime as dt
import sys

from sqlalchemy import make_url


def configure(database_url: str) -> None:
    """Django set up on ``database_url``, with django-celery-beat installed."""
    import django
    from django.conf import settings

    url = make_url(database_url)
    settings.configure(
        DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql", "NAME": url.database,
            "USER": url.username or "", "PASSWORD": url.password or "",
            "HOST": url.query.get("host") or url.host or "", "PORT": str(url.port or "")}},
        INSTALLED_APPS=["django_celery_beat"], USE_TZ=True, TIME_ZONE="UTC",
        DEFAULT_AUTO_FIELD="django.db.models.AutoField")
    django.setup()


def seed(future: dt.datetime, past: dt.datetime) -> None:
    """The periodic tasks the import test expects, one per case it maps or refuses."""
    from django_celery_beat.models import (
        ClockedSchedule,
        CrontabSchedule,
        IntervalSchedule,
        PeriodicTask,
        SolarSchedule,
    )

    def crontab(**fields: str) -> CrontabSchedule:
        return CrontabSchedule.objects.create(**fields)

    def every(count: int, period: str) -> IntervalSchedule:
        return IntervalSchedule.objects.create(every=count, period=period)

    def clocked(moment: dt.datetime) -> ClockedSchedule:
        return ClockedSchedule.objects.create(clocked_time=moment)

    one_hour = dt.timedelta(hours=1)
    tasks = [
        dict(name="weekday report", task="shop.report", args='["daily"]',
             kwargs='{"fmt": "pdf"}', queue="reports", start_time=future,
             crontab=crontab(minute="30", hour="8-17/3", day_of_week="mon-fri",
                             timezone="Europe/Berlin"),
             description="the sales report"),
        dict(name="every-90-s", task="shop.ping", expire_seconds=30, start_time=past,
             interval=every(90, IntervalSchedule.SECONDS)),
        dict(name="launch", task="shop.launch", kwargs='{"product": "x"}', one_off=True,
             clocked=clocked(future), expires=future + one_hour),
        dict(name="sunset", task="shop.lights",
             solar=SolarSchedule.objects.create(event="sunset", latitude=52.52,
                                                longitude=13.40)),
        dict(name="paused-cleanup", task="shop.cleanup", enabled=False,
             crontab=crontab(minute="0", hour="3", timezone="UTC")),
        dict(name="bad-args", task="shop.ping", args="[1, 2",
             interval=every(1, IntervalSchedule.HOURS)),
        dict(name="hourly-until", task="shop.ping", expires=future, priority=5,
             interval=every(1, IntervalSchedule.HOURS)),
        dict(name="old-launch", task="shop.launch", one_off=True, clocked=clocked(past)),
        dict(name="friday-13th", task="shop.ping",
             crontab=crontab(minute="0", hour="0", day_of_month="13", day_of_week="fri")),
        dict(name="once-daily", task="shop.ping", one_off=True,
             crontab=crontab(minute="0", hour="12", timezone="UTC")),
        dict(name="expired", task="shop.ping", expires=past,
             interval=every(10, IntervalSchedule.MINUTES)),
        dict(name="tiny", task="shop.ping",
             interval=every(500, IntervalSchedule.MICROSECONDS)),
    ]
    for fields in tasks:
        PeriodicTask.objects.create(**fields)


def main(argv: list[str]) -> None:
    database_url, future, past = argv
    configure(database_url)
    from django.core.management import call_command

    call_command("migrate", "django_celery_beat", verbosity=0)
    seed(dt.datetime.fromisoformat(future), dt.datetime.fromisoformat(past))


if __name__ == "__main__":
    main(sys.argv[1:])
