"""Flower sees the engine's runs: a real worker sends Celery task events for them, read
here as Flower reads them (``app.events.Receiver``)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import pytest
from celery import Celery

from app.enums import InvocationStatus
from messaging.publisher import publish_runs
from tests.support.receiver import Receiver, Reply
from tests.support.runs import add_invocation, add_trigger, wait_final
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.slow


def _capture(app: Celery, seen: dict[str, list[dict[str, Any]]], stop: threading.Event
             ) -> None:
    def on_event(event: dict[str, Any]) -> None:
        if event["type"].startswith("task-"):
            seen[event["uuid"]].append(event)

    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": on_event})
        while not stop.is_set():
            try:
                receiver.capture(limit=None, timeout=0.5, wakeup=False)
            except TimeoutError:
                continue


def test_flower_reads_a_received_started_and_finished_event_for_each_run(
    db, start_worker: Any, celery_client: Celery, receiver: Receiver,
) -> None:
    # Heartbeats on, as the Procfile runs it: Flower can turn its task events on.
    worker: WorkerProcess = start_worker(heartbeat=True)
    seen: dict[str, list[dict[str, Any]]] = defaultdict(list)
    stop = threading.Event()
    listener = threading.Thread(target=_capture, args=(celery_client, seen, stop),
                                daemon=True)
    listener.start()
    time.sleep(0.5)
    # What Flower does when it starts: ask the workers to send their events.
    celery_client.control.enable_events(destination=[worker.node])
    time.sleep(1.0)
    ok = add_invocation(db, add_trigger(db, receiver, max_attempts=1))
    publish_runs(celery_client, [ok])
    assert wait_final(db, ok).status is InvocationStatus.SUCCEEDED
    receiver.script(Reply(500, body="down"))
    failing = add_invocation(db, add_trigger(db, receiver, max_attempts=1))
    publish_runs(celery_client, [failing])
    assert wait_final(db, failing).status is InvocationStatus.FAILED
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (len(seen[str(ok)]) >= 3
                                               and len(seen[str(failing)]) >= 3):
        time.sleep(0.1)
    stop.set()
    listener.join(timeout=5)

    for task_id, last in ((str(ok), "task-succeeded"), (str(failing), "task-failed")):
        events = seen[task_id]
        assert [e["type"] for e in events] == ["task-received", "task-started", last], events
        assert {e["hostname"] for e in events} == {worker.node}
        assert events[0]["name"] == "cronbeat.run_trigger"
        assert 0 < events[2]["runtime"] < 10
    assert seen[str(failing)][2]["exception"] == "HTTP 500"
