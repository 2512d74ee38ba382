"""The worker's delivery engine: run messages in batches, deliveries on threads of their own.

A webhook is network I/O, and the work around it is two short transactions. Run as one
Celery task per message (the pool's request, tracer and events, plus a claim and a
finish transaction each), the worker's one GIL spends more on the bookkeeping than on
the delivery, and each delivery holds one of the pool's slots while it waits. So the
worker takes ``run_trigger`` messages off Celery's task machinery:

* :class:`tasks.run_consumer.RunConsumer` consumes ``cronbeat.runs`` on a broker
  connection of its own (the Celery consumer leaves that queue to it, :mod:`tasks.gate`)
  and hands each message to the engine (a message with a future ETA, a short retry's
  countdown, is held there until due). The message stays unacknowledged until its
  attempt is recorded, as with ``acks_late``: a killed worker's messages come back, and
  the invocation's lease decides who may run it. A broker that goes away costs the
  acks of that connection, never the worker (the consumer connects again).
* The engine's thread starts the messages that arrived within 20 ms with one claim
  transaction (:func:`app.firing.batch.start_batch`; runs only their tenant's cap holds
  back are put off 2 s there and sent again), hands each claimed attempt
  to a thread of the delivery pool (``CRONBEAT_RUN_CONCURRENCY`` per worker process,
  default 256; libcurl waits with the GIL released), and records every outcome that came
  back within 20 ms, with the alerts they raise, in one finish transaction (tried again
  until each attempt's lease ends while the database is away). Then it publishes
  retries and alerts, and acknowledges the messages. While the database does not
  answer a claim, the runs not claimed yet wait here, unacknowledged, and are claimed
  once it does.
* A message the batch did not claim nor put off (a duplicate, early, cancelled, overlap
  ``skip``, superseded, or without its day) runs the ``run_trigger`` task's own body on a
  delivery thread: the single-run path, which looks at each case.

Each attempt is reported as Celery task events when the worker's events are on
(:mod:`tasks.run_events`, for Flower), and the engine's worker runs the reaper that
takes back dead workers' runs (:mod:`tasks.reaper`); the worker bootstep that starts
all of it is :mod:`tasks.engine_step`.

The consumer's prefetch is the pool's size plus :data:`PREFETCH_EXTRA`, so the broker
hands this worker about as many run messages as it can deliver at once: memory stays
bounded by the prefetch, plus the short retries waiting for their ETA, as for any
Celery worker. The prefork pool's hard time limit's stand-in is the
same as for tasks (:mod:`tasks.overrun`): an attempt running past ``RUN_TIME_LIMIT_S`` ends
the process, and leases bring its attempts back.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import queue
import threading
import time
import uuid

from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.delivery.send import DeliveryResult
from app.firing.batch import finish_batch, start_batch
from app.firing.runner import TENANT_WAIT_S, RunOutcome, StartedRun, deliver
from messaging.publisher import publish_runs
from tasks import gate
from tasks.alerts import publish_alerts_quietly
from tasks.celery_app import RUN_TASK, celery_app
from tasks.delivery_threads import DeliveryThreads
from tasks.overrun import OverrunWatch
from tasks.reaper import Reaper
from tasks.run import RUN_TIME_LIMIT_S, _send_task, run_trigger
from tasks.run_consumer import Delivery, RunConsumer
from tasks.run_events import RunEvents, report_outcome
from tasks.run_messages import RunMessage, run_message
from tasks.runtime import get_runtime

log = logging.getLogger(__name__)

#: The most messages one pass starts together, and the most outcomes it records together.
MAX_BATCH = 500
#: How long a pass gathers messages and outcomes after the first one arrived.
BATCH_WINDOW_S = 0.02
#: The longest wait between two claims while the database does not answer.
START_RETRY_MAX_S = 5.0
#: How long a shutdown waits for the consumer's thread to send its last acks.
CONSUMER_CLOSE_S = 5.0
#: Run messages the consumer takes ahead of the delivery threads, so a thread that
#: frees finds its next run already here.
PREFETCH_EXTRA = 64


@dataclasses.dataclass(frozen=True)
class _Delivered:
    message: RunMessage
    run: StartedRun
    result: DeliveryResult
    #: When its delivery began (time.monotonic()), for the task event's runtime.
    began: float


class _Done:
    """A single-path run's thread is free again."""


class _Wake:
    """Nothing to do but a pass (the engine is stopping)."""


class Engine:
    """One per worker process: the batching thread and the delivery pool."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.consumer: RunConsumer | None = None
        #: Celery task events for Flower (tasks.run_events), when the worker sends them.
        self.task_events: RunEvents | None = None
        #: Takes back dead workers' runs (tasks.reaper), started with the engine.
        self.reaper: Reaper | None = None
        self._events: queue.SimpleQueue[RunMessage | _Delivered | _Done | _Wake | None] = (
            queue.SimpleQueue())
        #: The engine thread's own: messages not claimed yet, and delivery threads taken.
        self._waiting: collections.deque[RunMessage] = collections.deque()
        self._busy = 0
        self._pool = DeliveryThreads(capacity)
        self._thread = threading.Thread(target=self._loop, name="run-engine", daemon=True)
        self._watch = OverrunWatch(RUN_TASK, RUN_TIME_LIMIT_S)
        self._lock = threading.Lock()
        #: Messages taken from the consumer and not acknowledged yet.
        self._held = 0
        self._stopping = False
        self._idle = threading.Condition(self._lock)
        #: After the database failed a claim: when to try the waiting runs again.
        self._retry_at: float | None = None
        self._unreachable_for = 0

    def start(self) -> None:
        self._thread.start()
        self._watch.start(connect_signals=False)

    def submit(self, message: RunMessage) -> None:
        with self._lock:
            self._held += 1
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
        self._events.put(_Wake())  # the waiting messages are let go at the next pass
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
        while True:
            try:
                first = self._events.get(timeout=self._until_retry_s())
            except queue.Empty:  # the database may be back: try the waiting runs again
                first = _Wake()
            if first is None:
                return
            events = [first]
            # Gather what arrives within BATCH_WINDOW_S of the first event: one claim and
            # one finish for all of it (a few milliseconds of latency, for a fraction of
            # the statements, commits and Python per run).
            window_ends = time.monotonic() + BATCH_WINDOW_S
            while len(events) < 2 * MAX_BATCH:
                left_s = window_ends - time.monotonic()
                try:
                    event = (self._events.get(timeout=left_s) if left_s > 0
                             else self._events.get_nowait())
                except queue.Empty:
                    break
                if event is None:
                    self._events.put(None)
                    break
                events.append(event)
            delivered = [event for event in events if isinstance(event, _Delivered)]
            self._waiting.extend(event for event in events if isinstance(event, RunMessage))
            self._busy -= sum(1 for event in events if isinstance(event, _Done))
            try:
                for at in range(0, len(delivered), MAX_BATCH):
                    self._finish(delivered[at:at + MAX_BATCH])
                if self._stopping:
                    # Left unacknowledged: the broker gives them back at the channel's close.
                    self._forget(len(self._waiting))
                    self._waiting.clear()
                    continue
                self._start_waiting()
            except Exception:  # a bug: log it, and keep the engine alive
                log.exception("run engine: a pass failed", extra={"action": "run.engine_failed"})
            if self.task_events is not None:
                self.task_events.flush()

    def _until_retry_s(self) -> float | None:
        if self._retry_at is None:
            return None
        return max(0.0, self._retry_at - time.monotonic())

    def _start_waiting(self) -> None:
        # Claim no more runs than there are free delivery threads: a claimed attempt's
        # lease runs from its claim, so it must not wait for a thread. The rest wait
        # here, unclaimed, bounded by the worker's prefetch.
        if self._retry_at is not None and time.monotonic() < self._retry_at:
            return  # the database was unreachable: the waiting runs wait a moment more
        self._retry_at = None
        while self._waiting and self._busy < self.capacity and self._retry_at is None:
            count = min(self.capacity - self._busy, MAX_BATCH, len(self._waiting))
            batch = [self._waiting.popleft() for _ in range(count)]
            self._busy += count
            self._start(batch)

    def _start(self, messages: list[RunMessage]) -> None:
        keyed = [message for message in messages if message.key is not None]
        started: list[StartedRun] = []
        waiting: list[tuple[uuid.UUID, dt.datetime]] = []
        if keyed:
            runtime = get_runtime()
            try:
                started, waiting = start_batch(
                    runtime.sessions, runtime.settings,
                    [message.key for message in keyed if message.key], gate.process_id())
                self._unreachable_for = 0
            except (OperationalError, InterfaceError, PoolTimeout) as exc:
                # The database is unreachable: nothing was claimed. The messages stay
                # here, unacknowledged, and are claimed once it answers again, instead
                # of being dropped for the sweep to send again minutes later.
                self._busy -= len(messages)
                self._waiting.extendleft(reversed(messages))
                delay_s = min(START_RETRY_MAX_S, 0.5 * 2 ** self._unreachable_for)
                self._unreachable_for += 1
                self._retry_at = time.monotonic() + delay_s
                log.warning("run engine: the database did not answer (%s); %d runs wait"
                            " and are tried again in %.1f s", type(exc).__name__,
                            len(self._waiting), delay_s,
                            extra={"action": "run.start_waits_for_database"})
                return
            except Exception:
                # The database failed: each message tries the single path, which
                # reports its own failure as a task would.
                log.warning("run engine: starting %d runs together failed", len(keyed),
                            exc_info=True, extra={"action": "run.start_batch_failed"})
        if waiting:
            self._wait_for_tenant(waiting)
        by_id = {run.invocation_id: run for run in started}
        capped = {invocation_id for invocation_id, _ in waiting}
        for message in messages:
            run = None
            if message.key is not None:
                run = by_id.pop(message.key[0], None)
                if run is None and message.key[0] in capped:
                    capped.discard(message.key[0])  # its message is sent again
                    self._busy -= 1
                    self._done(message)
                    continue
            if run is None:
                self._pool.submit(self._run_single, message)
            else:
                self._watch.begin(message.invocation_id)
                if self.task_events is not None:
                    self.task_events.started(message.invocation_id)
                self._pool.submit(self._deliver, message, run)

    def _wait_for_tenant(self, waiting: list[tuple[uuid.UUID, dt.datetime]]) -> None:
        """Send the runs their tenant's cap holds back again, after TENANT_WAIT_S."""
        try:
            publish_runs(celery_app, waiting, countdown_s=TENANT_WAIT_S)
        except (BrokerError, RedisError, OSError):
            # Committed pending, counted as sent: the dispatcher's sweep sends them.
            log.warning("run engine: publishing %d capped runs failed; the sweep sends them",
                        len(waiting), exc_info=True,
                        extra={"action": "run.capped_publish_failed"})
        log.debug("run engine: %d runs wait for their tenant's cap", len(waiting),
                  extra={"action": "run.tenant_capped", "count": len(waiting)})

    def _finish(self, delivered: list[_Delivered]) -> None:
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
        self._busy -= len(delivered)
        if alert_ids:
            publish_alerts_quietly(alert_ids)
        finished_at = time.monotonic()
        for item, outcome in zip(delivered, outcomes, strict=True):
            self._after(item.message, outcome)
            self._watch.end(item.message.invocation_id)
            if self.task_events is not None:
                report_outcome(self.task_events, item.message.invocation_id, outcome,
                        finished_at - item.began, item.result.error)
            self._done(item.message)

    def _after(self, message: RunMessage, outcome: RunOutcome) -> None:
        """Publish the retry the recorded outcome asks for (after its commit, never before)."""
        if outcome.retry_in_s is None:
            return
        countdown_s = outcome.retry_in_s if outcome.retry_in_s > 0 else None
        try:
            publish_runs(celery_app, [message.run], countdown_s=countdown_s)
        except (BrokerError, RedisError, OSError):
            # The invocation is committed pending: the dispatcher's sweep publishes it.
            log.warning("run engine: publishing a retry failed; the sweep publishes it",
                        exc_info=True, extra={"action": "run.retry_publish_failed",
                                              "invocation_id": message.invocation_id})

    # Delivery threads.

    def _deliver(self, message: RunMessage, run: StartedRun) -> None:
        settings = get_runtime().settings
        began = time.monotonic()
        result = deliver(run, settings, _send_task)
        self._events.put(_Delivered(message, run, result, began))

    def _run_single(self, message: RunMessage) -> None:
        self._watch.begin(message.invocation_id)
        events, began = self.task_events, time.monotonic()
        if events is not None:
            events.started(message.invocation_id)
        try:
            outcome = run_trigger.run(message.invocation_id, message.scheduled_for)
            if events is not None:
                outcome = outcome or RunOutcome(status=None)
                report_outcome(events, message.invocation_id, outcome, time.monotonic() - began,
                        outcome.error)
        except Exception as exc:
            # As a failed task: logged and acknowledged; a pending invocation whose
            # message is gone is published again by the sweep.
            log.exception("run_trigger failed", extra={
                "action": "run.failed", "invocation_id": message.invocation_id})
            if events is not None:
                events.failed(message.invocation_id, time.monotonic() - began,
                              type(exc).__name__)
        finally:
            self._watch.end(message.invocation_id)
            self._done(message)
            self._events.put(_Done())

    # Either thread.

    def _ack(self, delivery: Delivery) -> None:
        if self.consumer is not None:
            self.consumer.ack(delivery)

    def _done(self, message: RunMessage) -> None:
        self._ack(message.delivery)
        log.debug("run_trigger[%s] done", message.invocation_id,
                  extra={"action": "run.message_done", "invocation_id": message.invocation_id})
        self._forget(1)

    def _forget(self, count: int) -> None:
        with self._lock:
            self._held -= count
            if not self._held:
                self._idle.notify_all()


