"""Parked runs (app.queries.parking, app.firing.fairness): a tick's share of messages per
tenant, the workers' fair take from the database, and what the sweep leaves alone.
Real PostgreSQL and Redis; the statements the engine and the tick run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections import Counter

import pytest
import redis
from sqlalchemy import select, update

from app.config import Settings
from app.enums import InvocationStatus
from app.firing import fairness
from app.firing.batch import park_waiting, start_parked
from app.firing.dispatch import DispatchOptions, dispatch_tick
from app.models import Invocation, Trigger
from app.queries import parking
from messaging.config import RUN_QUEUE
from messaging.publisher import publish_runs
from tasks.celery_app import celery_app
from tests.integration.test_dispatch import queued_ids
from tests.support.runs import T0, add_invocation, add_trigger, load

NOW = T0 + dt.timedelta(seconds=5)


def _rows(db, ids):
    with db.begin() as session:
        return {row.id: row for row in session.execute(
            select(Invocation.id, Invocation.tenant_id, Invocation.status,
                   Invocation.enqueued_at, Invocation.parked_at)
            .where(Invocation.id.in_(ids))).all()}


def _park(db, ids):
    with db.begin() as session:
        keys = session.execute(select(Invocation.id, Invocation.scheduled_for)
                               .where(Invocation.id.in_(ids))).all()
    return park_waiting(db, [tuple(key) for key in keys])


def test_a_tick_sends_one_batch_of_runs_alternating_tenants_and_parks_the_rest(
    db, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fairness, "TICK_MESSAGES", 5)
    for _ in range(7):
        add_trigger(db, tenant_id="big", next_run_at=T0)
    for _ in range(2):
        add_trigger(db, tenant_id="small", next_run_at=T0)

    report = dispatch_tick(db, lambda keys: publish_runs(celery_app, keys),
                           DispatchOptions(), now=NOW)

    assert (report.created, report.published, report.parked) == (9, 5, 4)
    with db.begin() as session:
        rows = session.execute(select(Invocation.id, Invocation.tenant_id,
                                      Invocation.enqueued_at, Invocation.parked_at)).all()
    sent = {row.id for row in rows if row.parked_at is None}
    # The tick claims round-robin by tenant: both of small's runs are among the five.
    assert Counter(row.tenant_id for row in rows if row.id in sent) == {"big": 3, "small": 2}
    assert {(row.enqueued_at, row.parked_at is None) for row in rows if row.id in sent} == {
        (NOW, True)}
    parked = sorted(row.parked_at for row in rows if row.id not in sent)
    # Parked in the tick's order, a microsecond apart, with no message.
    assert parked == [NOW + dt.timedelta(microseconds=n) for n in range(4)]
    assert {row.enqueued_at for row in rows if row.id not in sent} == {None}
    assert sorted(queued_ids(broker)) == sorted(str(i) for i in sent)

    # The broker loses its messages; a later tick's sweep sends the lost ones again, and
    # none of the parked: they have no message to lose, and are not unsent retries.
    broker.delete(RUN_QUEUE)
    with db.begin() as session:
        session.execute(update(Trigger).values(enabled=False))  # no new occurrence
    later = dispatch_tick(db, lambda keys: publish_runs(celery_app, keys),
                          DispatchOptions(republish_after_s=60),
                          now=NOW + dt.timedelta(minutes=10))
    assert (later.retries, later.republished, later.published) == (0, 5, 0)
    assert sorted(queued_ids(broker)) == sorted(str(i) for i in sent)


def test_a_take_gives_each_tenant_an_equal_share_oldest_first(db, settings: Settings) -> None:
    trigger = {tenant: add_trigger(db, tenant_id=tenant) for tenant in ("a", "b", "c")}
    ids = {tenant: [add_invocation(db, trigger[tenant], T0 + dt.timedelta(minutes=n),
                                   tenant_id=tenant) for n in range(count)]
           for tenant, count in (("a", 10), ("b", 2), ("c", 1))}
    for tenant in ("a", "b", "c"):
        for invocation_id in ids[tenant]:  # parked one by one: each a later parked_at
            assert len(_park(db, [invocation_id])) == 1

    with db.begin() as session:
        keys, last = parking.take_parked(session, 6)
    assert sorted(key[0] for key in keys) == sorted([*ids["a"][:2], *ids["b"], *ids["c"]])
    assert last == "c"
    # Fewer threads than tenants: the next take starts after the last tenant served.
    with db.begin() as session:
        assert [key[0] for key in parking.take_parked(session, 1, "a")[0]] == [ids["b"][0]]
        assert [key[0] for key in parking.take_parked(session, 1, "c")[0]] == [ids["a"][0]]


def test_a_free_thread_claims_parked_runs_and_sends_what_a_batch_cannot_claim(
    db, settings: Settings, broker: redis.Redis
) -> None:
    core = dataclasses.replace(settings, deployment_id=None)
    runnable = add_invocation(db, add_trigger(db, tenant_id="p"), tenant_id="p")
    cancelled = add_invocation(db, add_trigger(db, tenant_id="p"), tenant_id="p")
    paused_trigger = add_trigger(db, tenant_id="p")
    of_paused = add_invocation(db, paused_trigger, tenant_id="p")
    assert len(_park(db, [runnable, cancelled, of_paused])) == 3
    with db.begin() as session:
        session.execute(update(Invocation).where(Invocation.id == cancelled)
                        .values(cancel_requested=True))
        session.execute(update(Invocation).where(Invocation.id == of_paused).values(
            trigger_id=uuid.uuid4()))  # its trigger is gone: the single path cancels it

    started, published, last = start_parked(db, core, 10)

    assert [run.invocation_id for run in started] == [runnable]
    assert sorted(key[0] for key in published) == sorted([cancelled, of_paused])
    rows = _rows(db, [runnable, cancelled, of_paused])
    assert (rows[runnable].status, rows[runnable].parked_at) == (InvocationStatus.RUNNING, None)
    for invocation_id in (cancelled, of_paused):  # marked sent: the caller publishes them
        assert (rows[invocation_id].status, rows[invocation_id].parked_at,
                rows[invocation_id].enqueued_at is not None) == (
            InvocationStatus.PENDING, None, True)
    assert last == "p"
    assert start_parked(db, core, 10) == ([], [], "")


def test_parking_takes_pending_runs_only(db) -> None:
    trigger = add_trigger(db)
    pending = add_invocation(db, trigger, T0)
    running = add_invocation(db, trigger, T0 + dt.timedelta(minutes=1),
                             status=InvocationStatus.RUNNING)
    cancel = add_invocation(db, trigger, T0 + dt.timedelta(minutes=2), cancel_requested=True)

    assert [key[0] for key in _park(db, [pending, running, cancel])] == [pending]
    assert load(db, pending).enqueued_at is None
    assert (load(db, running).parked_at, load(db, cancel).parked_at) == (None, None)
