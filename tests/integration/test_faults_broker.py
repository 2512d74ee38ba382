"""Redis dies under load: the Procfile's worker, dispatcher and beat on a redis-server of
their own, SIGKILLed mid-burst (no persistence: every queued message is gone) and
started again after 1 s, then after 15 s. Every run is still delivered, repeats are only
same-id repeats of runs in flight, and the worker never stays alive and idle."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.enums import InvocationStatus
from app.models import Invocation, InvocationAttempt, Trigger
from tests.support.fleet import PrivateRedis, ProcfileProcess, wait_until
from tests.support.receiver import Receiver, Reply

pytestmark = pytest.mark.slow

RUNS = 1200
#: The receiver answers each delivery after this long.
RECEIVER_DELAY_S = 0.2
#: Each new run due after a restart starts within one tick (1 s here) plus the lease of
#: a run whose message was lost, plus room for a loaded 2-core machine.
NEW_RUN_DEADLINE_S = 30.0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def _db_now(db: sessionmaker[Session]) -> dt.datetime:
    with db.begin() as session:
        return session.execute(select(func.now())).scalar_one()


def add_one_time(db: sessionmaker[Session], url: str, run_at: dt.datetime, count: int,
                 **values: object) -> list[uuid.UUID]:
    rows = [{"tenant_id": f"t{n % 10}", "project_id": "p1",
             "name": f"once-{uuid.uuid4().hex[:10]}", "run_at": run_at,
             "next_run_at": run_at, "target_kind": "webhook", "webhook_url": url,
             "timeout_s": 10, "max_attempts": 3, "backoff_base_s": 1, "backoff_cap_s": 1,
             **values} for n in range(count)]
    with db.begin() as session:
        return list(session.execute(insert(Trigger).returning(Trigger.id), rows).scalars())


def _invocations(db: sessionmaker[Session]) -> list[Invocation]:
    with db.begin() as session:
        return list(session.execute(select(Invocation)).scalars())


def _attempt_counts(db: sessionmaker[Session]) -> Counter[uuid.UUID]:
    with db.begin() as session:
        return Counter(session.execute(select(InvocationAttempt.invocation_id)).scalars())


@pytest.fixture
def fleet(tmp_path: Path, redis_server: PrivateRedis) -> Iterator[dict[str, ProcfileProcess]]:
    env = {"REDIS_URL": redis_server.url, "CRONBEAT_TICK_SECONDS": "1",
           "CRONBEAT_REPUBLISH_AFTER_S": "5", "CRONBEAT_ALLOW_PRIVATE_TARGETS": "true",
           "CRONBEAT_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "data").mkdir()
    processes = {name: ProcfileProcess(name, tmp_path / "logs", env)
                 for name in ("worker", "dispatcher", "beat")}
    for process in processes.values():
        process.start()
    try:
        processes["worker"].wait_for_log(" ready.")
        processes["dispatcher"].wait_for_log(" ready.")
        yield processes
    finally:
        for process in processes.values():
            process.stop()


def _restart(redis_server: PrivateRedis, down_s: float) -> None:
    redis_server.kill()
    time.sleep(down_s)
    redis_server.start()


def test_every_run_is_delivered_through_two_redis_restarts_under_load(
    db: sessionmaker[Session], receiver: Receiver, redis_server: PrivateRedis,
    fleet: dict[str, ProcfileProcess],
) -> None:
    receiver.default = Reply(delay_s=RECEIVER_DELAY_S)
    worker = fleet["worker"]
    worker_pid = worker.pid
    ids = add_one_time(db, receiver.url(), _db_now(db) + dt.timedelta(seconds=2), RUNS)

    receiver.wait_for(250, timeout_s=60)
    _restart(redis_server, down_s=1.0)
    late = add_one_time(db, receiver.url("/after-first"),
                        _db_now(db) + dt.timedelta(seconds=1), 10)
    first_back = time.monotonic()
    wait_until(lambda: sum(r.path == "/after-first" for r in receiver.requests) == 10,
               "the runs due after the first restart", NEW_RUN_DEADLINE_S + 30)
    first_s = time.monotonic() - first_back

    wait_until(lambda: receiver.count >= 700, "more deliveries", 120)
    _restart(redis_server, down_s=15.0)
    late += add_one_time(db, receiver.url("/after-second"),
                         _db_now(db) + dt.timedelta(seconds=1), 10)
    second_back = time.monotonic()
    wait_until(lambda: sum(r.path == "/after-second" for r in receiver.requests) == 10,
               "the runs due after the second restart", NEW_RUN_DEADLINE_S + 30)
    second_s = time.monotonic() - second_back

    everything = ids + late
    wait_until(lambda: sum(i.status.is_final for i in _invocations(db)) == len(everything),
               "every run final", 180, every_s=0.5)

    invocations = _invocations(db)
    assert Counter(i.trigger_id for i in invocations) == Counter(everything)
    assert Counter(i.status for i in invocations) == {
        InvocationStatus.SUCCEEDED: len(everything)}
    deliveries = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert set(deliveries) == {str(i.id) for i in invocations}
    # A repeat is the same run delivered again with its own webhook-id, and only where
    # an attempt was in flight (its outcome could not be recorded): never a new run.
    attempts = _attempt_counts(db)
    repeated = {key for key, count in deliveries.items() if count > 1}
    assert all(attempts[uuid.UUID(key)] >= deliveries[key] for key in repeated)
    assert first_s < NEW_RUN_DEADLINE_S and second_s < NEW_RUN_DEADLINE_S, (first_s, second_s)
    # Alive with the same PID and consuming (it delivered the late runs), or exited
    # non-zero for its supervisor to restart: never alive and idle.
    assert worker.alive and worker.pid == worker_pid, worker.log_text()[-3000:]
    for name in ("dispatcher", "beat"):
        assert fleet[name].alive, fleet[name].log_text()[-3000:]
