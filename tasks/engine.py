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
  back within 20 ms with one finish transaction. Then it publishes retries and
  alerts, and acknowledges the messages.
* A message the batch did not claim nor put off (a duplicate, early, cancelled, overlap
  ``skip``, superseded, or without its day) runs the ``run_trigger`` task's own body on a
  delivery thread: the single-run path, which looks at each case.

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
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.delivery.send import DeliveryResult
from app.firing.batch import finish_batch, start_batch
from app.firing.runner import TENANT_WAIT_S, RunOutcome, StartedRun, deliver
from messaging.config import RUN_QUEUE
from messaging.publisher import Run, publish_runs
from tasks import gate
from tasks.alerts import publish_alerts_quietly
from tasks.celery_app import RUN_TASK, celery_app
from tasks.overrun import OverrunWatch
from tasks.reaper import Reaper
from tasks.run import RUN_TIME_LIMIT_S, _scheduled_for, _send_task, run_trigger
from tasks.run_consumer import Delivery, RunConsumer
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
class _Message:
    """A run message the engine holds, unacknowledged, until its attempt is recorded."""

    invocation_id: str
    scheduled_for: str | None
    key: tuple[uuid.UUID, dt.datetime] | None
    delivery: Delivery

    @property
    def run(self) -> Run:
        return self.invocation_id if self.key is None else self.key


@dataclasses.dataclass(frozen=True)
class _Delivered:
    message: _Message
    run: StartedRun
    result: DeliveryResult


class _Done:
    """A single-path run's thread is free again."""


class _Wake:
    """Nothing to do but a pass (the engine is stopping)."""


class _Threads:
    """The delivery threads: each takes the next job from one queue.

    ``concurrent.futures`` would build a future (and its condition) per job, which
    nobody here waits on: every job reports through the engine's events.
    """

    def __init__(self, count: int) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = (
            queue.SimpleQueue())
        self._threads = [threading.Thread(target=self._work, name=f"delivery-{n}", daemon=True)
                         for n in range(count)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Callable[..., None], *args: Any) -> None:
        self._jobs.put((job, args))

    def stop(self) -> None:
        """Let each thread end after the jobs queued before this."""
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, args = item
            try:
                job(*args)
            except Exception:  # a bug in a job: the thread goes on with the next
                log.exception("run engine: a delivery thread's job failed",
                              extra={"action": "run.engine_job_failed"})


class Engine:
    """One per worker process: the batching thread and the delivery pool."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.consumer: RunConsumer | None = None
        #: Takes back dead workers' runs (tasks.reaper), started with the engine.
        self.reaper: Reaper | None = None
        self._events: queue.SimpleQueue[_Message | _Delivered | _Done | _Wake | None] = (
            queue.SimpleQueue())
        #: The engine thread's own: messages not claimed yet, and delivery threads taken.
        self._waiting: collections.deque[_Message] = collections.deque()
        self._busy = 0
        self._pool = _Threads(capacity)
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

    def submit(self, message: _Message) -> None:
        with self._lock:
            self._held += 1
        self._events.put(message)

    def receive(self, delivery: Delivery) -> None:
        """Take one run message from the consumer (on its thread)."""
        run = _message_of(delivery)
        if run is None:
            log.warning("run_trigger: not an invocation id", extra={"action": "run.bad_id"})
            self._ack(delivery)
            return
        if self._stopping:
            return  # unacknowledged: handed back to the queue when the connection closes
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
            self._waiting.extend(event for event in events if isinstance(event, _Message))
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

    def _start(self, messages: list[_Message]) -> None:
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
        for item, outcome in zip(delivered, outcomes, strict=True):
            self._after(item.message, outcome)
            self._watch.end(item.message.invocation_id)
            self._done(item.message)

    def _after(self, message: _Message, outcome: RunOutcome) -> None:
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

    def _deliver(self, message: _Message, run: StartedRun) -> None:
        settings = get_runtime().settings
        result = deliver(run, settings, _send_task)
        self._events.put(_Delivered(message, run, result))

    def _run_single(self, message: _Message) -> None:
        self._watch.begin(message.invocation_id)
        try:
            run_trigger.run(message.invocation_id, message.scheduled_for)
        except Exception:
            # As a failed task: logged and acknowledged; a pending invocation whose
            # message is gone is published again by the sweep.
            log.exception("run_trigger failed", extra={
                "action": "run.failed", "invocation_id": message.invocation_id})
        finally:
            self._watch.end(message.invocation_id)
            self._done(message)
            self._events.put(_Done())

    # Either thread.

    def _ack(self, delivery: Delivery) -> None:
        if self.consumer is not None:
            self.consumer.ack(delivery)

    def _done(self, message: _Message) -> None:
        self._ack(message.delivery)
        log.debug("run_trigger[%s] done", message.invocation_id,
                  extra={"action": "run.message_done", "invocation_id": message.invocation_id})
        self._forget(1)

    def _forget(self, count: int) -> None:
        with self._lock:
            self._held -= count
            if not self._held:
                self._idle.notify_all()


_engine: Engine | None = None


def _message_of(delivery: Delivery) -> _Message | None:
    """The run a ``run_trigger`` message names, None if it names none."""
    try:
        args, kwargs, _ = delivery.message.decode()
        values = dict(zip(("invocation_id", "scheduled_for"), args, strict=False))
        values.update(kwargs)
        invocation_id = str(values["invocation_id"])
        parsed = uuid.UUID(invocation_id)
    except Exception:  # not JSON, not our shape, not a UUID: nothing can ever run it
        return None
    text = values.get("scheduled_for")
    scheduled_for = _scheduled_for(text) if isinstance(text, str) else None
    key = None if scheduled_for is None else (parsed, scheduled_for)
    return _Message(invocation_id, text if key else None, key, delivery)


class EngineStep(bootsteps.StartStopStep):
    """Worker bootstep: a worker started to consume cronbeat.runs runs the engine.

    It starts after the worker's presence (:class:`tasks.gate.WorkerPresence`) and
    stops before it: a warm shutdown lets the running deliveries end, and only then
    does the process leave the registry.
    """

    requires = ("tasks.gate:WorkerPresence",)
    label = "CronbeatRunEngine"

    def include_if(self, w: Any) -> bool:
        return gate.consumes(RUN_QUEUE)

    def start(self, w: Any) -> None:
        global _engine
        if _engine is not None:
            return
        capacity = get_runtime().settings.run_concurrency
        engine = Engine(capacity)
        engine.consumer = RunConsumer(w.app, RUN_QUEUE, engine.receive,
                                      prefetch=capacity + PREFETCH_EXTRA,
                                      may_consume=gate.is_active)
        gate.watch_engine(lambda: engine.consumer is not None and engine.consumer.consuming)
        engine.start()
        engine.consumer.start()
        engine.reaper = Reaper(gate.is_active)
        engine.reaper.start()
        _engine = engine

    def stop(self, w: Any) -> None:
        global _engine
        if _engine is not None:
            _engine.stop(timeout_s=RUN_TIME_LIMIT_S)
            _engine = None

    def terminate(self, w: Any) -> None:
        # A cold shutdown: nothing is waited for; the leases bring the runs back.
        global _engine
        if _engine is not None:
            _engine.stop(timeout_s=0.0)
            _engine = None


def install(app: Any) -> None:
    """Add the engine to ``app``'s worker (the worker entry point calls this)."""
    app.steps["worker"].add(EngineStep)
