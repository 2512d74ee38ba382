"""The deliver_alert task, and the alert watchdog that runs in every worker.

``deliver_alert(alert_id)`` is one attempt of one alert (app.alerting.delivery), on the
workers' ``cronbeat.alerts`` queue; a retry due within a tick goes out as a countdown
message, a longer one is published by the watchdog when due. A worker consumes that
queue on a broker connection of its own (:class:`AlertDeliveries`, with
:class:`tasks.run_consumer.RunConsumer`), as it does runs, not through the Celery
consumer: that one, holding an unacknowledged message when the broker goes, ends the
process (kombu 5.7 fails to restore it), where this one connects again.

The watchdog is a thread of each worker started to consume ``cronbeat.alerts`` (a
worker bootstep starts it, standbys included), not a beat schedule: a beat or
dispatcher that is down is what it must report. Every
CRONBEAT_ALERT_WATCH_INTERVAL_S, while this worker's deployment is the active one, it
tries the fleet-wide watchdog lock and, holding it, raises a "didn't run" alert for
each watched trigger whose expected occurrence did not run within its grace, and
publishes every alert due whose message is missing (raised by the dispatcher, a retry
whose wait is over, or a message the broker lost).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from celery import bootsteps
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from app.alerting import observe, watch
from app.alerting.delivery import deliver_alert as deliver
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.queries import alerts as alert_queries
from messaging.config import ALERT_QUEUE, ALERT_TASK
from messaging.publisher import publish_alerts
from tasks import gate
from tasks.celery_app import celery_app
from tasks.delivery_threads import DeliveryThreads
from tasks.run_consumer import Delivery, RunConsumer
from tasks.runtime import get_runtime, get_settings

log = logging.getLogger(__name__)

#: A message published this recently is left to arrive before the watchdog sends another.
SETTLE = dt.timedelta(seconds=30)
#: Triggers reported and alerts published per watchdog pass, at most.
PASS_LIMIT = 1000


def publish_alerts_quietly(alert_ids: Iterable[uuid.UUID],
                           countdown_s: float | None = None) -> None:
    """Publish alerts' messages; on a broker failure, leave them to the watchdog."""
    try:
        publish_alerts(celery_app, alert_ids, countdown_s=countdown_s)
    except (BrokerError, RedisError, OSError):
        log.warning("alert: publishing failed; the watchdog publishes it later",
                    exc_info=True, extra={"action": "alert.publish_failed"})


@celery_app.task(name=ALERT_TASK, ignore_result=True)
def deliver_alert(alert_id: str) -> None:
    """Run one attempt of alert ``alert_id``; safe to receive any number of times."""
    try:
        parsed = uuid.UUID(alert_id)
    except ValueError:
        log.warning("deliver_alert: not an alert id", extra={"action": "alert.bad_id"})
        return
    runtime = get_runtime()
    outcome = deliver(runtime.sessions, parsed,
                      allow_private=runtime.settings.allow_private_targets,
                      max_countdown_s=float(runtime.settings.tick_seconds))
    if outcome.retry_in_s is not None:
        publish_alerts_quietly([parsed], countdown_s=outcome.retry_in_s)


def watch_once(sessions: sessionmaker[Any], settings: Settings) -> dict[str, int]:
    """One watchdog pass; how many triggers it found that didn't run, and alerts it published.

    Raises:
        sqlalchemy errors: the database failed; nothing of the pass was committed.
    """
    with sessions.begin() as session:
        if not alert_queries.try_watchdog_lock(session):
            return {"didnt_run": 0, "published": 0}
        now = session.execute(select(func.now())).scalar_one()
        events = watch.didnt_run(session, now, settings.min_misfire_grace_s, PASS_LIMIT)
        raised = observe.observe(session, events, now, public_url=settings.public_url)
        due = alert_queries.take_due_alerts(session, now, SETTLE, PASS_LIMIT)
    if events:
        log.warning("alert watchdog: %d trigger(s) did not run within their grace (%d"
                    " alerts)", len(events), len(raised), extra={"action": "alert.didnt_run"})
    publish_alerts_quietly(due)
    return {"didnt_run": len(events), "published": len(due)}


class Watchdog:
    """The worker's watchdog thread: :func:`watch_once` every interval while active."""

    def __init__(self, settings: Settings, is_active: Any) -> None:
        self.settings = settings
        self._is_active = is_active
        self._stopping = threading.Event()
        # A connection of its own (one, opened per pass): the delivery threads' pool may
        # be busy, and the watchdog must not wait behind it.
        self._engine = make_engine(settings, pool_size=1, max_overflow=0,
                                   statement_timeout_s=60)
        self._sessions = make_session_factory(self._engine)
        self._thread = threading.Thread(target=self._loop, name="alert-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)
        self._engine.dispose()

    def _loop(self) -> None:
        while not self._stopping.wait(self.settings.alert_watch_interval_s):
            if not self._is_active():
                continue
            try:
                watch_once(self._sessions, self.settings)
            except Exception:
                log.warning("alert watchdog: the pass failed; trying again next interval",
                            exc_info=True, extra={"action": "alert.watch_failed"})


class AlertDeliveries:
    """The worker's consumer of ``cronbeat.alerts``: each message's attempt on one of a
    few threads, acknowledged once it ran (an alert is safe to receive twice)."""

    THREADS = 4

    def __init__(self, app: Any, may_consume: Callable[[], bool]) -> None:
        self._threads = DeliveryThreads(self.THREADS)
        # Alerts are not latency-critical: the thread wakes five times a second, not
        # fifty (an idle worker's CPU).
        self.consumer = RunConsumer(app, ALERT_QUEUE, self._receive,
                                    prefetch=2 * self.THREADS, may_consume=may_consume,
                                    name="alert consumer", poll_s=0.2)

    def start(self) -> None:
        self.consumer.start()

    def stop(self) -> None:
        """Take no new message; an attempt still running is left to its redelivery."""
        self.consumer.drain()
        self._threads.stop()
        self.consumer.close(timeout_s=5.0)

    def _receive(self, delivery: Delivery) -> None:
        self._threads.submit(self._deliver, delivery)

    def _deliver(self, delivery: Delivery) -> None:
        try:
            args, kwargs, _ = delivery.message.decode()
            deliver_alert(str(args[0] if args else kwargs["alert_id"]))
        except Exception:  # a bug or a bad message: logged, acknowledged, not retried
            log.exception("deliver_alert failed", extra={"action": "alert.failed"})
        finally:
            self.consumer.ack(delivery)


class AlertWatchStep(bootsteps.StartStopStep):
    """Worker bootstep: a worker started to consume cronbeat.alerts runs the watchdog.

    Whatever its role at boot: a standby's watchdog starts working the moment its
    deployment is activated, and stops when another one is (it looks every pass).
    """

    requires = ("tasks.gate:WorkerPresence",)
    label = "CronbeatAlertWatchdog"

    def __init__(self, w: Any, **kwargs: Any) -> None:
        super().__init__(w, **kwargs)
        self.watchdog: Watchdog | None = None
        self.deliveries: AlertDeliveries | None = None

    def include_if(self, w: Any) -> bool:
        return gate.consumes(ALERT_QUEUE)

    def start(self, w: Any) -> None:
        if self.watchdog is None:
            self.watchdog = Watchdog(get_settings(), gate.is_active)
            self.watchdog.start()
        if self.deliveries is None:
            deliveries = self.deliveries = AlertDeliveries(w.app, gate.is_active)
            gate.watch_consumer(lambda: deliveries.consumer.consuming)
            deliveries.start()

    def stop(self, w: Any) -> None:
        if self.deliveries is not None:
            self.deliveries.stop()
            self.deliveries = None
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None

    def terminate(self, w: Any) -> None:
        self.stop(w)


def install(app: Any) -> None:
    """Add the watchdog to ``app``'s worker (the worker entry point calls this)."""
    app.steps["worker"].add(AlertWatchStep)
