"""Fairness without throttling, with a real worker (app.firing.fairness): one tenant's
hanging targets or backlog do not hold another tenant's run back, and a tenant alone
keeps every thread busy. Default settings: no hard cap."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from app.enums import InvocationStatus
from app.firing import fairness
from app.firing.dispatch import DispatchOptions, dispatch_tick
from app.models import Invocation
from messaging.publisher import publish_runs
from tasks.celery_app import celery_app
from tests.integration.test_run_deadlines import mute_server
from tests.support.receiver import Receiver, Reply
from tests.support.runs import DEADLINE_S, T0, add_invocation, add_trigger, wait_final

pytestmark = pytest.mark.slow

HANG_TIMEOUT_S = 30


def _until(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _count(db, ids: list[uuid.UUID], *conditions: object) -> int:
    with db.begin() as session:
        return session.scalar(select(func.count()).where(Invocation.id.in_(ids), *conditions))


def _statuses(db, ids: list[uuid.UUID]) -> dict[InvocationStatus, int]:
    with db.begin() as session:
        return dict(session.execute(select(Invocation.status, func.count())
                                    .where(Invocation.id.in_(ids))
                                    .group_by(Invocation.status)).all())


def test_a_tenant_s_hanging_targets_do_not_hold_another_tenant_s_run(
    db, start_worker, celery_client, receiver: Receiver
) -> None:
    start_worker(CRONBEAT_RUN_CONCURRENCY="2")
    with mute_server() as port:
        hanging = [
            add_invocation(db, add_trigger(db, tenant_id="tenant-a",
                                           webhook_url=f"http://127.0.0.1:{port}/hook",
                                           timeout_s=HANG_TIMEOUT_S), tenant_id="tenant-a")
            for _ in range(4)
        ]
        publish_runs(celery_client, [(i, T0) for i in hanging])  # as a tick sends them
        running = Invocation.status == InvocationStatus.RUNNING
        _until("A's runs hold both threads", lambda: _count(db, hanging, running) == 2)
        other = add_invocation(db, add_trigger(db, receiver, tenant_id="tenant-b"),
                               tenant_id="tenant-b")
        publish_runs(celery_client, [(other, T0)])

        # Every thread hangs on A's targets: B's run starts on a spare thread.
        assert wait_final(db, other).status == InvocationStatus.SUCCEEDED
        assert receiver.count == 1
        # A's two other runs waited for a thread for a second: parked in the database.
        _until("A's waiting runs parked",
               lambda: _count(db, hanging, Invocation.parked_at.is_not(None)) == 2)
        assert _statuses(db, hanging) == {InvocationStatus.RUNNING: 2,
                                          InvocationStatus.PENDING: 2}


def test_a_tenant_alone_uses_every_thread_and_its_waiting_runs_come_back_from_the_database(
    db, start_worker, celery_client, receiver: Receiver
) -> None:
    start_worker(CRONBEAT_RUN_CONCURRENCY="3")
    hold = threading.Event()
    receiver.default = Reply(hold=hold)
    ids = [add_invocation(db, add_trigger(db, receiver, tenant_id="alone"), tenant_id="alone")
           for _ in range(9)]
    publish_runs(celery_client, [(i, T0) for i in ids])

    receiver.wait_for(3)  # no cap: all three threads deliver
    _until("the six waiting runs parked",
           lambda: _count(db, ids, Invocation.parked_at.is_not(None)) == 6)
    assert receiver.count == 3
    assert _statuses(db, ids) == {InvocationStatus.RUNNING: 3, InvocationStatus.PENDING: 6}

    hold.set()
    receiver.default = Reply()
    for invocation_id in ids:
        assert wait_final(db, invocation_id).status == InvocationStatus.SUCCEEDED
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(map(str, ids))
    with db.begin() as session:
        assert session.execute(select(Invocation.attempt, Invocation.parked_at).where(
            Invocation.id.in_(ids)).distinct()).all() == [(1, None)]


def test_a_tenant_s_backlog_does_not_delay_another_tenant_s_run(
    db, start_worker, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One batch is 5 runs here: of the 31 due runs, 5 are messages (B's among them, the
    # tick alternating tenants) and 26 are parked.
    monkeypatch.setattr(fairness, "TICK_MESSAGES", 5)
    start_worker(CRONBEAT_RUN_CONCURRENCY="2")
    receiver.default = Reply(delay_s=0.1)
    due = dt.datetime.now(dt.UTC).replace(microsecond=0)
    one_time = {"cron_expression": None, "run_at": due, "next_run_at": due}
    of_a = [add_trigger(db, receiver, tenant_id="tenant-a", **one_time) for _ in range(30)]
    of_b = add_trigger(db, receiver, tenant_id="tenant-b", **one_time)

    report = dispatch_tick(db, lambda keys: publish_runs(celery_app, keys), DispatchOptions())
    assert (report.created, report.published, report.parked) == (31, 5, 26)

    with db.begin() as session:
        rows = session.execute(select(Invocation.id, Invocation.trigger_id)).all()
    ids = [row.id for row in rows]
    _until("every run ended", lambda: _count(
        db, ids, Invocation.status == InvocationStatus.SUCCEEDED) == 31)
    with db.begin() as session:
        starts = session.execute(select(Invocation.trigger_id, Invocation.started_at,
                                        Invocation.attempt)).all()
    [b_started] = [row.started_at for row in starts if row.trigger_id == of_b]
    # B's run starts within the first batch: at most the batch's other runs, and one
    # take of parked runs (a worker idle at the commit may take two before the messages
    # land), start before it.
    a_before_b = sum(1 for row in starts if row.trigger_id in set(of_a)
                     and row.started_at < b_started)
    assert a_before_b <= 4 + 2
    assert {row.attempt for row in starts} == {1}
    assert receiver.count == 31
