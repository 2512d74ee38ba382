"""Queue and task names, and the Celery configuration every process applies to its app."""

from __future__ import annotations

from celery import Celery
from celery.schedules import crontab
from kombu import Exchange, Queue

from app.config import Settings

DISPATCH_TASK = "cronbeat.dispatch_due_triggers"
RUN_TASK = "cronbeat.run_trigger"
#: The history's maintenance (app.history.retention), on the dispatcher's queue.
HISTORY_TASK = "cronbeat.maintain_history"
#: How often beat sends it: partitions are added days ahead, so this only bounds how
#: long an expired day outlives its retention.
HISTORY_INTERVAL_S = 900.0
#: Alerts (app.alerting): delivered by the workers, on a queue of their own, so no
#: alert backlog delays a run and no run backlog delays an alert.
ALERT_TASK = "cronbeat.deliver_alert"
ALERT_QUEUE = "cronbeat.alerts"
# Ticks and runs travel on separate queues, so a tick is never stuck behind a burst of
# ten thousand runs.
DISPATCH_QUEUE = "cronbeat.dispatch"
RUN_QUEUE = "cronbeat.runs"
# The longest countdown a run_trigger message is published with: a retry's backoff is
# capped by the trigger's backoff_cap_s (at most 86,400 s, the API's bound), and
# Retry-After by app.delivery.retry_after.MAX_RETRY_AFTER_S (3,600 s), whichever is longer.
MAX_RETRY_COUNTDOWN_S = 86_400
# Redis hands an unacknowledged message to another consumer once it is this old. A
# worker holds a countdown message unacknowledged until it runs it, so a visibility
# timeout shorter than the countdown (Redis's default is one hour) has the message
# handed out again every hour: copies pile up in workers' memory, each doing nothing
# at its ETA but an extra claim that fails. Twice the longest countdown avoids that.
# Safe because the visibility timeout recovers nothing Cronbeat relies on: a dead
# worker's running invocation comes back when its lease runs out, and a pending one
# whose message went down with the worker is published again by the dispatcher's
# sweep CRONBEAT_REPUBLISH_AFTER_S after it was due (app.queries.sweep.take_stale_pending).
VISIBILITY_TIMEOUT_S = 2 * MAX_RETRY_COUNTDOWN_S

def configure(app: Celery, settings: Settings) -> Celery:
    """Apply ``settings`` to ``app``; returns ``app``. Opens no connection."""
    tick = crontab(minute="*") if settings.tick_seconds == 60 else float(settings.tick_seconds)
    exchange = Exchange("cronbeat", type="direct")
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        # A lost broker is tried again for as long as it takes (kombu waits 2, 4, 6, ...
        # up to 30 s between tries), not given up after 100 tries (about 50 minutes),
        # which would end a worker that has nothing wrong with it.
        broker_connection_max_retries=None,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        enable_utc=True,
        timezone="UTC",
        # The tasks the Celery consumer runs (ticks, the history's maintenance, alerts)
        # are acknowledged as they start: each is recorded in the database before it is
        # sent (an alert's row and lease, beat's next tick), so a lost message costs
        # nothing, and the consumer holds no unacknowledged message at a broker loss
        # (kombu 5.7 then fails restoring it, and Celery ends the worker). Run messages
        # go to the delivery engine (tasks.engine), which acknowledges each only after
        # its attempt is recorded.
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        # And the consumer reads a message only when a thread is free for it (Celery's
        # documented setting, Redis only): none waits in the process unacknowledged for
        # a thread (two long ticks busy on the dispatcher's two), the one kind kombu 5.7
        # cannot restore when the broker goes, which ended the dispatcher with status 1.
        worker_disable_prefetch=True,
        # Processes that only publish (the API) replace these options with their own and
        # need not carry this key: Redis applies it where messages are consumed.
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        task_queues=(
            Queue(DISPATCH_QUEUE, exchange, routing_key=DISPATCH_QUEUE),
            Queue(RUN_QUEUE, exchange, routing_key=RUN_QUEUE),
            Queue(ALERT_QUEUE, exchange, routing_key=ALERT_QUEUE),
        ),
        task_default_queue=RUN_QUEUE,
        task_default_exchange="cronbeat",
        task_routes={
            DISPATCH_TASK: {"queue": DISPATCH_QUEUE, "routing_key": DISPATCH_QUEUE},
            RUN_TASK: {"queue": RUN_QUEUE, "routing_key": RUN_QUEUE},
            HISTORY_TASK: {"queue": DISPATCH_QUEUE, "routing_key": DISPATCH_QUEUE},
            ALERT_TASK: {"queue": ALERT_QUEUE, "routing_key": ALERT_QUEUE},
        },
        beat_schedule={
            "dispatch-due-triggers": {
                "task": DISPATCH_TASK,
                "schedule": tick,
                # A tick nobody picked up within one interval is superseded by the next.
                "options": {"expires": float(settings.tick_seconds)},
            },
            "maintain-history": {
                "task": HISTORY_TASK,
                "schedule": HISTORY_INTERVAL_S,
                "options": {"expires": HISTORY_INTERVAL_S},
            },
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        # Exits once another deployment is activated (tasks/beat.py).
        beat_scheduler="tasks.beat:FencedScheduler",
        worker_hijack_root_logger=False,
    )
    return app
