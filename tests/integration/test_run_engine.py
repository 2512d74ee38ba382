"""The worker's delivery engine (tasks.engine): a real worker, real Redis, a loopback receiver."""

from __future__ import annotations

import collections
import datetime as dt
import threading
import time

import pytest
from sqlalchemy import func, select

from app.enums import InvocationStatus
from app.models import Invocation, InvocationAttempt
from messaging.config import RUN_QUEUE, RUN_TASK
from messaging.publisher import publish_runs
from tests.support.receiver import Receiver, Reply
from tests.support.runs import DEADLINE_S, T0, add_invocation, add_trigger

pytestmark = pytest.mark.slow


def _parked(db, ids) -> int:
    with db.begin() as session:
        return session.scalar(select(func.count()).where(
            Invocation.id.in_(ids), Invocation.parked_at.is_not(None)))


def _statuses(db, ids) -> collections.Counter[InvocationStatus]:
    with db.begin() as session:
        return collections.Counter(session.scalars(
            select(Invocation.status).where(Invocation.id.in_(ids))).all())


def _wait_all_final(db, ids, timeout_s: float = 60.0) -> collections.Counter[InvocationStatus]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        statuses = _statuses(db, ids)
        if all(status.is_final for status in statuses.elements()):
            return statuses
        time.sleep(0.1)
    raise AssertionError(f"not all final after {timeout_s} s: {_statuses(db, ids)}")


def test_slow_receivers_hold_delivery_threads_not_the_worker_s_slots(
    db, start_worker, celery_client, receiver: Receiver
) -> None:
    # Two Celery threads, eight delivery threads: a held receiver holds eight runs at
    # once, and no more (the rest wait, unclaimed, in the worker; after a second
    # without a thread they are parked in the database, the engine's decision to wait).
    start_worker(concurrency=2, CRONBEAT_RUN_CONCURRENCY="8")
    hold = threading.Event()
    receiver.script(*[Reply(hold=hold)] * 12)
    ids = [add_invocation(db, add_trigger(db, receiver)) for _ in range(12)]
    publish_runs(celery_client, [(i, T0) for i in ids])

    receiver.wait_for(8)
    deadline = time.monotonic() + DEADLINE_S
    while _parked(db, ids) < 4:
        assert time.monotonic() < deadline, "the waiting runs were never parked"
        time.sleep(0.05)
    assert receiver.count == 8
    assert _statuses(db, ids) == {InvocationStatus.RUNNING: 8, InvocationStatus.PENDING: 4}

    hold.set()
    assert _wait_all_final(db, ids) == {InvocationStatus.SUCCEEDED: 12}
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(map(str, ids))


def test_a_warm_shutdown_lets_the_running_delivery_finish_and_records_it(
    db, start_worker, celery_client, receiver: Receiver
) -> None:
    worker = start_worker()
    hold = receiver.hold_next()
    running = add_invocation(db, add_trigger(db, receiver))
    publish_runs(celery_client, [running])
    receiver.wait_for(1)

    stopping = threading.Thread(target=worker.stop)
    stopping.start()
    time.sleep(1.0)
    assert worker.alive  # waiting for its delivery
    hold.set()
    stopping.join(timeout=30)

    assert not worker.alive
    assert worker.log_text().count("run: attempt finished") == 1
    # Its message was acknowledged, not handed back to the queue at the channel's close.
    assert "unacknowledged message" not in worker.log_text()
    row = _statuses(db, [running])
    assert row == {InvocationStatus.SUCCEEDED: 1}
    assert receiver.count == 1


def test_runs_over_their_tenant_s_hard_cap_wait_parked_and_all_run_once_when_it_frees(
    db, start_worker, celery_client, receiver: Receiver
) -> None:
    start_worker(CRONBEAT_TENANT_MAX_RUNNING="2")
    hold = threading.Event()
    receiver.script(*[Reply(hold=hold)] * 6)
    ids = [add_invocation(db, add_trigger(db, receiver, tenant_id="capped"),
                          tenant_id="capped") for _ in range(6)]
    publish_runs(celery_client, ids)

    receiver.wait_for(2)
    # The others are parked in the database (no message goes round the broker), and
    # the free threads take none of them while the tenant is at its cap.
    deadline = time.monotonic() + DEADLINE_S
    while _parked(db, ids) < 4:
        assert time.monotonic() < deadline, "the capped runs were never parked"
        time.sleep(0.05)
    assert receiver.count == 2
    assert _statuses(db, ids) == {InvocationStatus.RUNNING: 2, InvocationStatus.PENDING: 4}

    hold.set()
    assert _wait_all_final(db, ids) == {InvocationStatus.SUCCEEDED: 6}
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(map(str, ids))
    with db.begin() as session:
        assert set(session.scalars(select(Invocation.attempt).where(
            Invocation.id.in_(ids))).all()) == {1}


# The tests from here on use the module's worker (celery_worker), which stays up after
# them and would take the runs of a later test that starts a worker of its own.
def test_a_burst_with_duplicate_messages_delivers_each_run_exactly_once(
    db, celery_worker, celery_client, receiver: Receiver
) -> None:
    ids = []
    for tenant in ("burst-a", "burst-b", "burst-c"):
        trigger = add_trigger(db, receiver, tenant_id=tenant, cron_expression="* * * * *")
        ids += [add_invocation(db, trigger, T0 + dt.timedelta(minutes=i), tenant_id=tenant)
                for i in range(100)]
    keys = []
    with db.begin() as session:
        keys = [tuple(row) for row in session.execute(
            select(Invocation.id, Invocation.scheduled_for).where(Invocation.id.in_(ids)))]
    # Every run once with its day, the first 50 again with it and without it.
    publish_runs(celery_client, [*keys, *keys[:50], *(key[0] for key in keys[:50])])

    assert _wait_all_final(db, ids) == {InvocationStatus.SUCCEEDED: 300}
    ids_seen = collections.Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert sorted(ids_seen) == sorted(map(str, ids))
    assert set(ids_seen.values()) == {1}
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(InvocationAttempt).where(
            InvocationAttempt.invocation_id.in_(ids))) == 300
        assert set(session.scalars(select(Invocation.attempt).where(
            Invocation.id.in_(ids))).all()) == {1}


def test_a_receiver_answering_with_nul_bytes_is_recorded_with_its_runs_batch(
    db, celery_worker, celery_client, receiver: Receiver
) -> None:
    # PostgreSQL text cannot hold NUL: unreplaced, this run's finish would fail, and
    # with it the finish of every run recorded in the same batch.
    receiver.script(Reply(500, body="bad\x00body"))
    ids = [add_invocation(db, add_trigger(db, receiver, max_attempts=1)) for _ in range(20)]
    publish_runs(celery_client, ids)

    assert _wait_all_final(db, ids) == {InvocationStatus.FAILED: 1,
                                        InvocationStatus.SUCCEEDED: 19}
    with db.begin() as session:
        excerpts = session.scalars(select(Invocation.response_excerpt).where(
            Invocation.id.in_(ids), Invocation.status == InvocationStatus.FAILED)).all()
    assert excerpts == ["bad\ufffdbody"]
    assert receiver.count == 20


def test_malformed_run_messages_are_dropped_and_the_worker_goes_on(
    db, celery_worker, celery_client, receiver: Receiver, broker
) -> None:
    good = add_invocation(db, add_trigger(db, receiver))
    publish_runs(celery_client, ["not-a-uuid"])
    # A day that does not parse: the run takes the path by id.
    celery_client.send_task(RUN_TASK, args=(str(good), "not-a-day"), queue=RUN_QUEUE)

    assert _wait_all_final(db, [good]) == {InvocationStatus.SUCCEEDED: 1}
    celery_worker.wait_for_log(r"run_trigger: not an invocation id")

    def held() -> list[bytes]:
        # Kombu's unacknowledged deliveries, of every queue and test: just these two.
        return [value for value in broker.hvals("unacked")
                if b"not-a-uuid" in value or str(good).encode() in value]

    deadline = time.monotonic() + 10
    while held() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert held() == []  # both acknowledged, neither left to come back
    assert broker.llen(RUN_QUEUE) == 0
    assert receiver.count == 1


def test_overlap_buffer_one_starts_the_waiting_run_when_the_running_one_ends(
    db, start_worker, celery_client, receiver: Receiver
) -> None:
    worker = start_worker()
    receiver.script(Reply(delay_s=5.0))  # the first run's target takes 5 s
    trigger_id = add_trigger(db, receiver, overlap_policy="buffer_one", timeout_s=30)
    first, second, third = (add_invocation(db, trigger_id, T0 + dt.timedelta(minutes=n))
                            for n in (0, 5, 10))
    publish_runs(celery_client, [(first, T0)])
    receiver.wait_for(1)
    publish_runs(celery_client, [second])
    worker.wait_for_log(r"run: waiting for the run before it \(overlap buffer_one\)")
    publish_runs(celery_client, [third])
    statuses = _wait_all_final(db, [first, second, third])
    assert statuses == {InvocationStatus.SUCCEEDED: 2, InvocationStatus.MISSED: 1}
    with db.begin() as session:
        rows = {row.id: row for row in session.execute(
            select(Invocation.id, Invocation.status, Invocation.last_error,
                   Invocation.started_at, Invocation.finished_at)
            .where(Invocation.id.in_([first, second, third])))}
    assert (rows[third].status, rows[third].last_error) == (
        InvocationStatus.MISSED, "missed: the run before it was still running and another"
        " run already waited for it (overlap buffer_one)")
    # The waiting run started once the first had ended, never beside it.
    assert rows[second].started_at >= rows[first].finished_at
    assert rows[first].finished_at - rows[first].started_at >= dt.timedelta(seconds=5), rows
    assert receiver.count == 2
