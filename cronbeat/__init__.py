"""What Cronbeat gives a Celery app of your own: ``cronbeat.celery.install(app)``, and
schedules declared as code (``@cronbeat.schedule(...)``, ``cronbeat.Schedule``)."""

from cronbeat.declarations import Schedule, ScheduleError, schedule

__all__ = ["Schedule", "ScheduleError", "schedule"]
