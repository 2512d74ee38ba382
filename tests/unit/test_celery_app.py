"""The Celery configuration: Redis never hands a waiting retry message out twice."""

from __future__ import annotations

from celery import Celery

from app.config import Settings
from app.delivery.retry_after import MAX_RETRY_AFTER_S
from app.queries.leases import LEASE_GRACE_S
from tasks.celery_app import configure
from tasks.run import MAX_TRIGGER_TIMEOUT_S

# The API's bound on a trigger's backoff_cap_s (api/schemas/triggers.py).
MAX_BACKOFF_CAP_S = 86_400


def configured() -> Celery:
    settings = Settings.from_env({"DATABASE_URL": "postgresql://h/db", "REDIS_URL": "redis://h/0"})
    return configure(Celery("test", set_as_current=False), settings)


def test_the_visibility_timeout_outlasts_the_longest_retry_countdown() -> None:
    options = configured().conf.broker_transport_options
    longest_countdown_s = max(MAX_BACKOFF_CAP_S, MAX_RETRY_AFTER_S)
    assert options["visibility_timeout"] >= 2 * longest_countdown_s


def test_the_visibility_timeout_outlasts_the_longest_attempt() -> None:
    # A run message stays unacknowledged while its attempt runs.
    options = configured().conf.broker_transport_options
    assert options["visibility_timeout"] > MAX_TRIGGER_TIMEOUT_S + 2 * LEASE_GRACE_S


def test_beat_sends_the_history_maintenance_to_the_dispatchers_every_15_minutes() -> None:
    from messaging.config import DISPATCH_QUEUE, HISTORY_TASK

    app = configured()
    entry = app.conf.beat_schedule["maintain-history"]
    assert (entry["task"], entry["schedule"]) == (HISTORY_TASK, 900.0)
    assert app.conf.task_routes[HISTORY_TASK]["queue"] == DISPATCH_QUEUE
    from tasks.celery_app import celery_app

    # The worker imports the task's module, so the dispatcher can run what beat sends.
    assert "tasks.maintenance" in celery_app.conf.include
