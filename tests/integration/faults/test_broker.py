"""Redis dies under load: the Procfile's worker, dispatcher and beat on a redis-server of
their own, SIGKILLed mid-burst (no persistence: every queued message is gone) and
started again after 1 s, then after 15 s. Every run is still delivered, repeats are only
same-id repeats of runs in flight, every failed run has its one alert, delivered once,
and the worker never stays alive and idle."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.enums import InvocationStatus
from app.models import Alert, AlertChannel, Invocation, InvocationAttempt, Trigger
from tests.integration.faults.conftest import db_now, one_time
from tests.support.fleet import PrivateRedis, ProcfileProcess, wait_until
from tests.support.receiver import Receiver, Reply, running_receiver
from tests.support.runs import new_secret

pytestmark = pytest.mark.slow

RUNS = 1200
#: The receiver answers each delivery after this long.
RECEIVER_DELAY_S = 0.2
#: A run due after a restart starts within one tick (1 s here), the Celery consumers'
#: reconnection (kombu waits 2, 4, 6, ... s between tries) and the engine's (at most
#: 5 s), with room for a loaded 2-core machine.
NEW_RUN_DEADLINE_S = 30.0


def _invocations(db: sessionmaker[Session]) -> list[Invocation]:
    with db.begin() as session:
        return list(session.execute(select(Invocation)).scalars())


def _attempt_counts(db: sessionmaker[Session]) -> Counter[uuid.UUID]:
    with db.begin() as session:
        return Counter(session.execute(select(InvocationAttempt.invocation_id)).scalars())


def _restart(redis_server: PrivateRedis, down_s: float) -> None:
    redis_server.kill()
    time.sleep(down_s)
    redis_server.start()


def _late_runs_delivered(db: sessionmaker[Session], receiver: Receiver, path: str) -> float:
    """Ten runs due a second from now, after a restart; the seconds until all arrived."""
    one_time(db, receiver.url(path), db_now(db) + dt.timedelta(seconds=1), 10)
    return wait_until(lambda: sum(r.path == path for r in receiver.requests) == 10,
                      f"the runs due after the restart ({path})", NEW_RUN_DEADLINE_S)


@pytest.fixture
def refusing() -> Iterator[Receiver]:
    """A target that answers 503 to everything."""
    for server in running_receiver():
        server.default = Reply(503, body="unavailable")
        yield server


def test_every_run_is_delivered_through_two_redis_restarts_under_load(
    db: sessionmaker[Session], receiver: Receiver, refusing: Receiver,
    channel_receiver: Receiver, redis_server: PrivateRedis,
    fleet: Callable[..., dict[str, ProcfileProcess]],
) -> None:
    # The default republish delay (300 s): the runs whose messages Redis lost come back
    # because the dispatcher sees that the broker lost everything, not by their age. The
    # alert watchdog looks every 2 s for alerts whose message the broker lost.
    processes = fleet(("worker", "dispatcher", "beat"), redis_server,
                      CRONBEAT_REPUBLISH_AFTER_S="300", CRONBEAT_ALERT_WATCH_INTERVAL_S="2")
    worker = processes["worker"]
    worker_pid = worker.pid
    receiver.default = Reply(delay_s=RECEIVER_DELAY_S)
    with db.begin() as session:
        session.execute(insert(AlertChannel).values(
            tenant_id="failing", project_id="p1", name="ops",
            url=channel_receiver.url("/alerts"), signing_secret=new_secret()))
    # Runs of a watched project that fail (one attempt each): ten in the first burst,
    # ten more failing just before the long outage, whose alerts' messages may be lost.
    failing = one_time(db, refusing.url(), db_now(db) + dt.timedelta(seconds=2), 10,
                       tenant_id="failing", max_attempts=1)
    one_time(db, receiver.url(), db_now(db) + dt.timedelta(seconds=2), RUNS)

    receiver.wait_for(250, timeout_s=60)
    _restart(redis_server, down_s=1.0)
    _late_runs_delivered(db, receiver, "/after-first")
    failing += one_time(db, refusing.url(), db_now(db) + dt.timedelta(seconds=1), 10,
                        tenant_id="failing", max_attempts=1)
    wait_until(lambda: receiver.count >= 700 and refusing.count >= 20, "more deliveries", 120)
    _restart(redis_server, down_s=15.0)
    _late_runs_delivered(db, receiver, "/after-second")

    everything = RUNS + 20
    wait_until(lambda: sum(i.status.is_final for i in _invocations(db)) == everything + 20,
               "every run final", 180, every_s=0.5)
    invocations = [i for i in _invocations(db) if i.tenant_id != "failing"]
    assert Counter(i.status for i in invocations) == {InvocationStatus.SUCCEEDED: everything}
    deliveries = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert set(deliveries) == {str(i.id) for i in invocations}
    # Each failed run: failed, with its one alert, delivered once, whatever the broker lost.
    wait_until(lambda: len({r.headers["webhook-id"] for r in channel_receiver.requests})
               >= 20, "every failure's alert delivered", 120)
    time.sleep(2)  # a duplicate would show now
    with db.begin() as session:
        failed = Counter(session.execute(select(Invocation.status).where(
            Invocation.tenant_id == "failing")).scalars())
        alerts = session.execute(select(Alert.trigger_id, Alert.kind, Alert.status)).all()
    assert failed == {InvocationStatus.FAILED: 20}
    assert Counter((a.kind, a.status) for a in alerts) == {("failing", "delivered"): 20}
    assert Counter(a.trigger_id for a in alerts) == Counter(failing)
    assert set(Counter(r.headers["webhook-id"] for r in channel_receiver.requests).values()
               ) == {1}
    # A repeat is the same run delivered again with its own webhook-id, and only where
    # an attempt was in flight (its outcome could not be recorded): never a new run.
    attempts = _attempt_counts(db)
    assert all(attempts[uuid.UUID(key)] >= count for key, count in deliveries.items())
    # Alive with the same PID and consuming (it delivered the late runs), or exited
    # non-zero for its supervisor to restart: never alive and idle.
    assert worker.alive and worker.pid == worker_pid, worker.log_text()[-3000:]
    for name in ("dispatcher", "beat"):
        assert processes[name].alive, processes[name].log_text()[-3000:]
    assert processes["dispatcher"].log_text().count(
        "the broker lost its queued messages (restarted empty?)") == 2  # the 2 restarts
    # The evidence stays in the log: the lost connection's traceback, in the text format.
    log = worker.log_text()
    lost = log.index("run consumer: the broker connection failed")
    assert "Traceback (most recent call last):" in log[lost:lost + 5000]
    assert "run consumer: connected to the broker again" in log


def test_a_warm_shutdown_with_the_broker_gone_ends_within_seconds_and_records_its_run(
    db: sessionmaker[Session], receiver: Receiver, redis_server: PrivateRedis,
    fleet: Callable[..., dict[str, ProcfileProcess]],
) -> None:
    processes = fleet(("worker", "dispatcher", "beat"), redis_server)
    hold = receiver.hold_next()
    trigger, = one_time(db, receiver.url(), db_now(db) + dt.timedelta(seconds=1), 1)
    receiver.wait_for(1, timeout_s=30)
    redis_server.kill()
    time.sleep(2.0)  # every process has noticed
    stopping = time.monotonic()
    for process in processes.values():
        process.terminate()
    time.sleep(1.0)
    hold.set()  # the delivery ends; its ack cannot be sent, and is not waited for
    statuses = {name: process.wait(30) for name, process in processes.items()}
    stopped_s = time.monotonic() - stopping
    assert stopped_s < 15, stopped_s
    assert statuses == {"worker": 0, "dispatcher": 0, "beat": 0}, {
        name: process.log_text()[-2000:] for name, process in processes.items()}
    with db.begin() as session:
        row = session.execute(select(Invocation).where(Invocation.trigger_id == trigger)).one()
    assert row.Invocation.status is InvocationStatus.SUCCEEDED


def test_a_tick_that_meets_the_dead_broker_does_not_hold_a_warm_shutdown(
    db: sessionmaker[Session], redis_server: PrivateRedis,
    fleet: Callable[..., dict[str, ProcfileProcess]],
) -> None:
    # 6,000 runs due at once: the dispatcher's tick is still claiming and publishing
    # when Redis dies. Each publish and each read of the broker would wait for kombu's
    # tries (6 s each; the warm shutdown took 10-18 s); once the shutdown began, they
    # give up at once (messaging.connect).
    processes = fleet(("dispatcher", "beat"), redis_server)
    triggers = one_time(db, "http://127.0.0.1:9/never", db_now(db) + dt.timedelta(seconds=2),
                        6000)
    wait_until(lambda: _invocations(db), "the tick's first batch", 30, every_s=0.01)
    redis_server.kill()
    time.sleep(2.0)  # the tick meets the dead broker
    stopping = time.monotonic()
    for process in processes.values():
        process.terminate()
    statuses = {name: process.wait(30) for name, process in processes.items()}
    stopped_s = time.monotonic() - stopping
    assert statuses == {"dispatcher": 0, "beat": 0}
    assert stopped_s < 5, (stopped_s, processes["dispatcher"].log_text()[-3000:])
    # Nothing lost: each trigger has its run recorded (pending: no worker runs), or is
    # still due for the next tick.
    with db.begin() as session:
        runs = Counter(session.execute(select(Invocation.trigger_id, Invocation.status)))
        due = set(session.execute(select(Trigger.id).where(
            Trigger.next_run_at.is_not(None))).scalars())
    assert set(runs.values()) == {1}
    assert {status for _, status in runs} == {InvocationStatus.PENDING}
    assert {trigger for trigger, _ in runs} | due == set(triggers)
    assert not {trigger for trigger, _ in runs} & due
