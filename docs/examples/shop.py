"""A Celery app of your own, as README's "Coming from celery beat" runs it.

The task knows nothing of Cronbeat: the broker comes from CELERY_BROKER_URL (``source
.cronbeat/env`` sets it to ``make run``'s Redis), and Cronbeat calls ``add`` with the
trigger's args and kwargs. The occurrence's facts are in ``self.request.cronbeat``. The
one Cronbeat line, ``cronbeat.celery.install(app)``, reports each run's real outcome.

    celery --workdir docs/examples -A shop worker -Q celery
"""

from __future__ import annotations

from typing import Any

from celery import Celery

import cronbeat.celery

app = Celery("shop")
# The one line for outcome tracking: the task's real outcome reaches Cronbeat.
cronbeat.celery.install(app)


@app.task(bind=True, name="shop.add")
def add(self: Any, x: int, y: int, *, scale: int = 1) -> int:
    facts = getattr(self.request, "cronbeat", None) or {}
    result = (x + y) * scale
    print(f"add({x}, {y}, scale={scale}) = {result} for {facts.get('scheduled_for')}",
          flush=True)
    return result
