"""The worker's delivery engine: run messages in batches, deliveries on threads of their own.

A webhook is network I/O around two short transactions; run as one Celery task per
message, the worker's GIL would spend more on the bookkeeping than on the delivery. So:

* :class:`tasks.run_consumer.RunConsumer` consumes ``cronbeat.runs`` on a broker
  connection of its own and hands each message here, unacknowledged until its attempt
  is recorded (as ``acks_late``): a killed worker's messages come back, and the
  invocation's lease decides who may run it.
* The engine's thread claims the messages that arrived within 20 ms in one transaction
  (:func:`app.firing.batch.start_batch`), hands each attempt to a delivery thread
  (``CRONBEAT_RUN_CONCURRENCY``, default 512; libcurl waits with the GIL released),
  and records the outcomes that came back within 20 ms, with their alerts, in one
  finish transaction; then it publishes retries and alerts and acknowledges. While the
  database does not answer, unclaimed runs wait here and are claimed once it does.
* A message the batch neither claims nor parks runs ``run_trigger``'s own body on a
  delivery thread: the single-run path, which looks at each case.
* Fairness without throttling (app.firing.fairness; :mod:`tasks.run_queue` decides):
  spare threads for tenants with none while all are taken; a message that waited 1 s
  for a thread is parked in the database; free threads with no message waiting take
  parked runs, an equal share of each tenant's.

Task events for Flower: :mod:`tasks.run_events`. Memory is bounded by the prefetch (the
threads plus :data:`PREFETCH_EXTRA`); an attempt past ``RUN_TIME_LIMIT_S`` ends the
process (:mod:`tasks.overrun`). :mod:`tasks.engine_step` starts it all.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.firing.batch import finish_batch, park_waiting, start_batch, start_parked
from app.firing.runner import RunOutcome, StartedRun, deliver
from messaging.publisher import Run, publish_runs
from tasks import gate
from tasks.alerts import publish_alerts_quietly
from tasks.celery_app import RUN_TASK, celery_app
from tasks.delivery_threads import DeliveryThreads
from tasks.engine_events import Delivered, Done, Event, Wake, gather
from tasks.overrun import OverrunWatch
from tasks.reaper import Reaper
from tasks.run import RUN_TIME_LIMIT_S, _send_task, run_trigger
from tasks.run_consumer import Delivery, RunConsumer
from tasks.run_events import RunEvents, report_outcome
from tasks.run_messages import RunMessage, pulled_message, run_message
from tasks.run_queue import DatabaseWait, RunQueue
from tasks.runtime import get_runtime

log = logging.getLogger(__name__)

#: The most messages one pass starts together, and the most outcomes it records together.
MAX_BATCH = 500
#: How long a pass gathers messages and outcomes after the first one arrived.
BATCH_WINDOW_S = 0.02
#: How long a shutdown waits for the consumer's thread to send its last acks.
CONSUMER_CLOSE_S = 5.0
#: Run messages the consumer takes ahead of the delivery threads, so a thread that
#: frees finds its next run already here.
PREFETCH_EXTRA = 64
#: Errors that say the database did not answer (nothing was done).
_UNREACHABLE = (OperationalError, InterfaceError, PoolTimeout)


def spare_threads(capacity: int) -> int:
    """Threads beyond ``capacity`` for tenants that have none while all are taken."""
    return max(8, capacity // 4)


class Engine:
    """One per worker process: the batching thread and the delivery pool."""

    def __init__(self, capacity: int, may_pull: Callable[[], bool] = lambda: True) -> None:
        self.capacity = capacity
        self.spare = spare_threads(capacity)
        self.consumer: RunConsumer | None = None
        #: Celery task events for Flower (tasks.run_events), when the worker sends them.
        self.task_events: RunEvents | None = None
        #: Takes back dead workers' runs (tasks.reaper), started with the engine.
        self.reaper: Reaper | None = None
        self._events: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        #: The engine thread's own: messages not claimed yet, and threads taken.
        self._queue: RunQueue[RunMessage] = RunQueue(capacity, self.spare)
        #: Whether this worker may take parked runs (its deployment is the active one).
        self._may_pull = may_pull
        self._pulled_after = ""
        self._pool = DeliveryThreads(capacity + self.spare)
        self._thread = threading.Thread(target=self._loop, name="run-engine", daemon=True)
        self.watch = OverrunWatch(RUN_TASK, RUN_TIME_LIMIT_S)
        self._lock = threading.Lock()
        #: Runs taken (messages and parked runs) and not done with yet.
        self._held = 0
        self._stopping = False
        self._idle = threading.Condition(self._lock)
        #: After the database failed to answer: when to try the waiting runs again.
        self._database = DatabaseWait()

    def start(self) -> None:
        self._thread.start()
        self.watch.start(connect_signals=False)

    def submit(self, message: RunMessage) -> None:
        self._hold(1)
        self._events.put(message)

    def receive(self, delivery: Delivery) -> None:
        """Take one run message from the consumer (on its thread)."""
        run = run_message(delivery)
        if run is None:
            log.warning("run_trigger: not an invocation id", extra={"action": "run.bad_id"})
            self._ack(delivery)
            return
        if self._stopping:
            return  # unacknowledged: handed back to the queue when the connection closes
        if self.task_events is not None:
            self.task_events.received(run.invocation_id, run.args)
        self.submit(run)

    def stop(self, timeout_s: float) -> None:
        """Take no new message; wait up to ``timeout_s`` for the attempts running to end.

        Messages not started yet stay unacknowledged: the broker gives them back when
        the consumer's connection closes. Nothing here waits on the broker: an ack is a
        request to the consumer's thread, which drops it if its connection is gone.
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._stopping = True
        if self.consumer is not None:
            self.consumer.drain()
        self._events.put(Wake())  # the waiting messages are let go at the next pass
        with self._lock:
            while self._held and time.monotonic() < deadline:
                self._idle.wait(min(1.0, deadline - time.monotonic()))
            if self._held:
                log.warning("run engine: %d deliveries still running at shutdown; their"
                            " leases bring them back", self._held,
                            extra={"action": "run.shutdown_abandoned"})
        self._events.put(None)
        self._thread.join(timeout=5.0)
        self._pool.stop()
        if self.consumer is not None:
            self.consumer.close(timeout_s=CONSUMER_CLOSE_S)
        if self.reaper is not None:
            self.reaper.stop()
        if self.task_events is not None:
            self.task_events.close()

    # The engine's thread.

    def _loop(self) -> None:
        while (events := gather(self._events, self._wake_in_s(), BATCH_WINDOW_S,
                                2 * MAX_BATCH)) is not None:
            delivered = [event for event in events if isinstance(event, Delivered)]
            self._queue.arrive((event for event in events if isinstance(event, RunMessage)),
                               time.monotonic())
            for _ in range(sum(1 for event in events if isinstance(event, Done))):
                self._queue.ended(None)
            try:
                for at in range(0, len(delivered), MAX_BATCH):
                    self._finish(delivered[at:at + MAX_BATCH])
                if self._stopping:
                    # Left unacknowledged: the broker gives them back at the channel's close.
                    self._forget(len(self._queue.take_all()))
                    continue
                self._start_waiting()
            except Exception:  # a bug: log it, and keep the engine alive
                log.exception("run engine: a pass failed", extra={"action": "run.engine_failed"})
            if self.task_events is not None:
                self.task_events.flush()

    def _wake_in_s(self) -> float | None:
        now = time.monotonic()
        if self._database.until is not None:
            return max(0.0, self._database.until - now)
        return self._queue.wake_in_s(now) if not self._stopping else None

    def _start_waiting(self) -> None:
        # Claim no more runs than there are free delivery threads: a claimed attempt's
        # lease runs from its claim, so it must not wait for a thread. The rest wait
        # here, unclaimed, bounded by the worker's prefetch, or go back to the database.
        now = time.monotonic()
        wait = self._database.waiting
        while len(self._queue) and self._queue.free() and not wait(now):
            self._start(self._queue.to_start(MAX_BATCH))
        if not wait(now) and (spare := self._queue.to_try_spare()):
            self._start(spare, spare=True)
        if not wait(now) and (overdue := self._queue.to_park(now)):
            self._park(overdue, now)
        if not wait(now) and self._queue.may_pull(now) and self._may_pull():
            self._pull(now)

    def _start(self, messages: list[RunMessage], *, spare: bool = False) -> None:
        """Claim and start ``messages`` (counted busy). On ``spare`` threads, only runs
        of tenants with none of this engine's threads; the others wait again instead
        of taking the single path."""
        except_tenants = self._queue.tenants() if spare else ()
        keyed = [message for message in messages if message.key is not None]
        started: list[StartedRun] = []
        parked: set[object] = set()
        if keyed:
            runtime = get_runtime()
            try:
                started, capped = start_batch(
                    runtime.sessions, runtime.settings,
                    [message.key for message in keyed if message.key], gate.process_id(),
                    except_tenants=except_tenants, spare=spare)
                parked = {invocation_id for invocation_id, _ in capped}
                self._database.answered()
            except _UNREACHABLE as exc:
                # Nothing was claimed. The messages stay here, unacknowledged, and are
                # claimed once the database answers again, instead of being dropped for
                # the sweep to send again minutes later.
                self._queue.put_back(messages, time.monotonic())
                self._database_failed(exc, "claiming runs")
                return
            except Exception:
                # The database failed: each message tries the single path, which
                # reports its own failure as a task would.
                log.warning("run engine: starting %d runs together failed", len(keyed),
                            exc_info=True, extra={"action": "run.start_batch_failed"})
        by_id = {run.invocation_id: run for run in started}
        again: list[RunMessage] = []
        for message in messages:
            run = by_id.pop(message.key[0], None) if message.key is not None else None
            if run is not None:
                self._begin(message, run)
            elif message.key is not None and message.key[0] in parked:
                self._queue.ended(None)  # parked for its tenant's cap: the message is done
                self._done(message)
            elif spare:
                again.append(message)
            else:
                self._pool.submit(self._run_single, message)
        if again:
            self._queue.put_back(again, time.monotonic())

    def _begin(self, message: RunMessage, run: StartedRun) -> None:
        self._queue.started(run.tenant_id)
        self.watch.begin(message.invocation_id)
        if self.task_events is not None:
            self.task_events.started(message.invocation_id)
        self._pool.submit(self._deliver, message, run)

    def _park(self, messages: list[RunMessage], now: float) -> None:
        """Park the runs of messages that waited too long for a thread; the others (no
        key, a cancel requested, not pending) wait on for the single path."""
        keys = [message.key for message in messages if message.key is not None]
        try:
            parked = {key[0] for key in park_waiting(get_runtime().sessions, keys)}
        except Exception as exc:  # nothing was parked: they wait on here
            self._queue.arrive(messages, now)
            self._database_failed(exc, "parking runs")
            return
        left = [message for message in messages
                if message.key is None or message.key[0] not in parked]
        self._queue.arrive(left, now)
        for message in messages:
            if message.key is not None and message.key[0] in parked:
                self._done(message)
        if parked:
            log.info("run engine: %d runs waited for a thread; parked in the database",
                     len(parked), extra={"action": "run.parked", "count": len(parked)})

    def _pull(self, now: float) -> None:
        """Start parked runs on the free threads (no message waits)."""
        runtime = get_runtime()
        try:
            started, published, self._pulled_after = start_parked(
                runtime.sessions, runtime.settings, min(self._queue.free(), MAX_BATCH),
                gate.process_id(), self._pulled_after)
            self._database.answered()
        except Exception as exc:  # nothing was taken
            self._queue.pulled(0, now)  # not again before pull_idle_s
            self._database_failed(exc, "taking parked runs")
            return
        self._queue.pulled(len(started), now)
        self._hold(len(started))
        for run in started:
            message = pulled_message(run.invocation_id, run.scheduled_for)
            if self.task_events is not None:
                self.task_events.received(message.invocation_id, message.args)
            self._begin(message, run)
        if published:
            self._publish(published, None, "parked runs a batch cannot start")

    def _database_failed(self, exc: Exception, what: str) -> None:
        """``what`` failed, and did nothing: an unreachable database is tried again after
        a wait (the runs wait here); any other error is a bug, logged."""
        if not isinstance(exc, _UNREACHABLE):
            log.error("run engine: %s failed", what, exc_info=exc,
                      extra={"action": "run.engine_step_failed"})
            return
        delay_s = self._database.failed(time.monotonic())
        log.warning("run engine: the database did not answer (%s); %d runs wait and are"
                    " tried again in %.1f s", type(exc).__name__, len(self._queue), delay_s,
                    extra={"action": "run.start_waits_for_database"})

    def _publish(self, runs: Sequence[Run], countdown_s: float | None, what: str) -> None:
        try:
            publish_runs(celery_app, runs, countdown_s=countdown_s)
        except (BrokerError, RedisError, OSError):
            # Committed pending and counted as sent: the dispatcher's sweep sends them.
            log.warning("run engine: publishing %d %s failed; the sweep publishes them",
                        len(runs), what, exc_info=True,
                        extra={"action": "run.publish_failed"})

    def _finish(self, delivered: list[Delivered]) -> None:
        runtime = get_runtime()
        try:
            outcomes, alert_ids = finish_batch(runtime.sessions, runtime.settings,
                                               [(item.run, item.result) for item in delivered])
        except Exception:
            # Not recorded even one by one: the leases run out and the sweep runs them
            # again. The messages are done with either way.
            log.error("run engine: %d outcomes could not be recorded", len(delivered),
                      exc_info=True, extra={"action": "run.finish_failed"})
            outcomes, alert_ids = [RunOutcome(status=None)] * len(delivered), ()
            self.watch.unrecorded([item.message.invocation_id for item in delivered])
        for item in delivered:
            self._queue.ended(item.run.tenant_id)
        if alert_ids:
            publish_alerts_quietly(alert_ids)
        finished_at = time.monotonic()
        for item, outcome in zip(delivered, outcomes, strict=True):
            self._after(item.message, outcome)
            self.watch.end(item.message.invocation_id)
            if self.task_events is not None:
                report_outcome(self.task_events, item.message.invocation_id, outcome,
                        finished_at - item.began, item.result.error)
            self._done(item.message)

    def _after(self, message: RunMessage, outcome: RunOutcome) -> None:
        """Publish the retry the recorded outcome asks for (after its commit, never before)."""
        if outcome.retry_in_s is not None:
            self._publish([message.run], outcome.retry_in_s if outcome.retry_in_s > 0
                          else None, "retries")

    # Delivery threads.

    def _deliver(self, message: RunMessage, run: StartedRun) -> None:
        settings = get_runtime().settings
        began = time.monotonic()
        result = deliver(run, settings, _send_task)
        self._events.put(Delivered(message, run, result, began))

    def _run_single(self, message: RunMessage) -> None:
        self.watch.begin(message.invocation_id)
        events, began = self.task_events, time.monotonic()
        if events is not None:
            events.started(message.invocation_id)
        try:
            outcome = run_trigger.run(message.invocation_id, message.scheduled_for)
            if events is not None:
                outcome = outcome or RunOutcome(status=None)
                report_outcome(events, message.invocation_id, outcome,
                               time.monotonic() - began, outcome.error)
        except Exception as exc:
            # As a failed task: logged and acknowledged; a pending invocation whose
            # message is gone is published again by the sweep.
            log.exception("run_trigger failed", extra={
                "action": "run.failed", "invocation_id": message.invocation_id})
            self.watch.unrecorded([message.invocation_id])
            if events is not None:
                events.failed(message.invocation_id, time.monotonic() - began,
                              type(exc).__name__)
        finally:
            self.watch.end(message.invocation_id)
            self._done(message)
            self._events.put(Done())

    def _ack(self, delivery: Delivery | None) -> None:
        if self.consumer is not None and delivery is not None:
            self.consumer.ack(delivery)

    def _done(self, message: RunMessage) -> None:
        self._ack(message.delivery)
        log.debug("run_trigger[%s] done", message.invocation_id,
                  extra={"action": "run.message_done", "invocation_id": message.invocation_id})
        self._forget(1)

    def _hold(self, count: int) -> None:
        with self._lock:
            self._held += count

    def _forget(self, count: int) -> None:
        with self._lock:
            self._held -= count
            if not self._held:
                self._idle.notify_all()


