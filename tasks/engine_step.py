"""The worker bootstep that runs the delivery engine (tasks.engine)."""

from __future__ import annotations

from typing import Any

from celery import bootsteps

from messaging.config import RUN_QUEUE
from tasks import gate
from tasks.engine import PREFETCH_EXTRA, Engine
from tasks.reaper import Reaper
from tasks.run import RUN_TIME_LIMIT_S
from tasks.run_consumer import RunConsumer
from tasks.run_events import RunEvents
from tasks.runtime import get_runtime


class EngineStep(bootsteps.StartStopStep):
    """Worker bootstep: a worker started to consume cronbeat.runs runs the engine.

    It starts after the worker's presence (:class:`tasks.gate.WorkerPresence`) and
    stops before it: a warm shutdown lets the running deliveries end, and only then
    does the process leave the registry.
    """

    requires = ("tasks.gate:WorkerPresence",)
    label = "CronbeatRunEngine"

    def __init__(self, w: Any, **kwargs: Any) -> None:
        super().__init__(w, **kwargs)
        self.engine: Engine | None = None

    def include_if(self, w: Any) -> bool:
        return gate.consumes(RUN_QUEUE)

    def start(self, w: Any) -> None:
        if self.engine is not None:
            return
        capacity = get_runtime().settings.run_concurrency
        engine = Engine(capacity, may_pull=gate.is_active)
        engine.consumer = RunConsumer(w.app, RUN_QUEUE, engine.receive,
                                      prefetch=capacity + engine.spare + PREFETCH_EXTRA,
                                      may_consume=gate.is_active)
        gate.watch_consumer(
            lambda: engine.consumer is not None and engine.consumer.consuming)
        # The worker's own event dispatcher says whether events are on (-E, or Flower's
        # enable_events): a documented attribute of the consumer, there once it started.
        engine.task_events = RunEvents(
            w.app, w.hostname, lambda: getattr(w.consumer, "event_dispatcher", None))
        engine.start()
        engine.consumer.start()
        engine.reaper = Reaper(gate.is_active, held=engine.watch.held,
                               process_id=gate.process_id)
        engine.reaper.start()
        self.engine = engine

    def stop(self, w: Any) -> None:
        if self.engine is not None:
            self.engine.stop(timeout_s=RUN_TIME_LIMIT_S)
            self.engine = None

    def terminate(self, w: Any) -> None:
        # A cold shutdown: nothing is waited for; the leases bring the runs back.
        if self.engine is not None:
            self.engine.stop(timeout_s=0.0)
            self.engine = None


def install(app: Any) -> None:
    """Add the engine to ``app``'s worker (the worker entry point calls this)."""
    app.steps["worker"].add(EngineStep)
