"""A declaration wrong in a way that shows without the server: importing this module
raises cronbeat.ScheduleError, and cronbeat sync says so (exit 2)."""

from __future__ import annotations

from celery import Celery

import cronbeat

app = Celery("sample-misdeclared")


@cronbeat.schedule(every=1.5, name="too-fine")
@app.task(name="sample.too_fine")
def too_fine() -> None:
    """Every one and a half seconds: an interval is whole seconds."""

