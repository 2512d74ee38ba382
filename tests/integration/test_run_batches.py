"""The batch core (app.firing.batch) called directly: real PostgreSQL, a real receiver."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import pytest
from sqlalchemy import func, select, update

from app.config import Settings
from app.delivery.send import DeliveryResult, Verdict
from app.enums import InvocationStatus
from app.firing.batch import finish_batch, start_batch, start_parked
from app.firing.runner import RunOutcome, deliver
from app.models import Invocation
from tests.support.receiver import Receiver
from tests.support.runs import T0, add_invocation, add_trigger, attempts, load, no_task

pytestmark = pytest.mark.slow


def _keys(db, ids):
    with db.begin() as session:
        rows = session.execute(
            select(Invocation.id, Invocation.scheduled_for).where(Invocation.id.in_(ids))
        ).all()
    return [(row.id, row.scheduled_for) for row in rows]


def test_a_batch_claims_each_runnable_run_once_and_leaves_the_others_pending(
    db, settings: Settings
) -> None:
    core = dataclasses.replace(settings, deployment_id="batch", tenant_max_running=0)
    trigger = add_trigger(db)
    runnable = [add_invocation(db, trigger, T0 + dt.timedelta(minutes=i)) for i in range(5)]
    cancelled = add_invocation(db, trigger, T0 + dt.timedelta(minutes=10),
                               cancel_requested=True)
    early = add_invocation(db, trigger, T0 + dt.timedelta(minutes=11),
                           run_after=dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
    paused = add_trigger(db, enabled=False)
    of_paused = add_invocation(db, paused)
    keys = _keys(db, [*runnable, cancelled, early, of_paused])
    # A duplicate message for one run, in the same batch.
    keys.append(next(key for key in keys if key[0] == runnable[0]))

    started, waiting = start_batch(db, core, keys)

    assert sorted(run.invocation_id for run in started) == sorted(runnable)
    assert {run.attempt for run in started} == {1}
    for invocation_id in runnable:
        row = load(db, invocation_id)
        assert (row.status, row.attempt, row.deployment_id) == (
            InvocationStatus.RUNNING, 1, "batch")
        assert attempts(db, invocation_id) == [(1, None, None, None, "batch", False)]
    for invocation_id in (cancelled, early, of_paused):
        assert (load(db, invocation_id).status, attempts(db, invocation_id)) == (
            InvocationStatus.PENDING, [])
    assert waiting == []  # no cap
    # A second batch of the same keys claims nothing more.
    assert start_batch(db, core, keys) == ([], [])


def test_a_batch_claims_no_more_of_a_tenant_than_its_cap(db, settings: Settings) -> None:
    core = dataclasses.replace(settings, deployment_id="batch", tenant_max_running=3)
    trigger_a = add_trigger(db, tenant_id="cap-a")
    trigger_b = add_trigger(db, tenant_id="cap-b")
    already = add_invocation(db, trigger_a, T0 - dt.timedelta(minutes=1), tenant_id="cap-a")
    assert len(start_batch(db, core, _keys(db, [already]))[0]) == 1
    of_a = [add_invocation(db, trigger_a, T0 + dt.timedelta(minutes=i), tenant_id="cap-a")
            for i in range(5)]
    of_b = [add_invocation(db, trigger_b, T0 + dt.timedelta(minutes=i), tenant_id="cap-b")
            for i in range(4)]

    started, parked = start_batch(db, core, _keys(db, [*of_a, *of_b]))

    # Tenant a runs one already: two more fit, its oldest two; tenant b's first three.
    assert sorted(run.invocation_id for run in started) == sorted([*of_a[:2], *of_b[:3]])
    # The rest are parked for their tenant: pending, no message, run_after untouched.
    assert sorted(key[0] for key in parked) == sorted([*of_a[2:], *of_b[3:]])
    with db.begin() as session:
        rows = session.execute(select(
            Invocation.status, Invocation.run_after, Invocation.enqueued_at,
            Invocation.parked_at.is_not(None),
        ).where(Invocation.id.in_([*of_a[2:], *of_b[3:]]))).all()
    assert rows == [(InvocationStatus.PENDING, None, None, True)] * 4
    # A free thread takes them only as the cap allows: none while a is at 3 and b at 3.
    assert start_parked(db, core, 10)[:2] == ([], [])
    # b's first run ends: one of b's parked runs may start, the oldest; a's stay parked.
    with db.begin() as session:
        session.execute(update(Invocation).where(Invocation.id == of_b[0])
                        .values(status=InvocationStatus.SUCCEEDED))
    pulled, published, _ = start_parked(db, core, 10)
    assert ([run.invocation_id for run in pulled], published) == ([of_b[3]], [])
    assert load(db, of_b[3]).parked_at is None
    assert all(load(db, invocation_id).parked_at is not None for invocation_id in of_a[2:])


def test_a_batch_finish_records_every_outcome_as_the_single_path_does(
    db, settings: Settings, receiver: Receiver
) -> None:
    core = dataclasses.replace(settings, deployment_id="batch", tenant_max_running=0,
                               allow_private_targets=True)
    trigger = add_trigger(db, receiver, max_attempts=2, backoff_base_s=1, backoff_cap_s=1)
    ids = [add_invocation(db, trigger, T0 + dt.timedelta(minutes=i)) for i in range(4)]
    started = sorted(start_batch(db, core, _keys(db, ids))[0],
                     key=lambda run: run.scheduled_for)
    assert [run.invocation_id for run in started] == ids
    delivered = deliver(started[0], core, no_task)
    assert (delivered.verdict, delivered.response_status) == (Verdict.SUCCEEDED, 200)
    results = [
        delivered,
        DeliveryResult(verdict=Verdict.PERMANENT, error="HTTP 400", response_status=400),
        DeliveryResult(verdict=Verdict.TRANSIENT, error="HTTP 503", response_status=503),
        DeliveryResult(verdict=Verdict.SUCCEEDED, response_status=204),
    ]
    # The last one's lease was taken back meanwhile (the sweep, or a cancel's finish).
    with db.begin() as session:
        session.execute(update(Invocation).where(Invocation.id == ids[3]).values(
            status=InvocationStatus.PENDING, lease_expires_at=None))

    outcomes, alert_ids = finish_batch(db, core, list(zip(started, results, strict=True)),
                                       rand=lambda: 0.5)

    assert outcomes == [
        RunOutcome(status=InvocationStatus.SUCCEEDED, attempt=1),
        RunOutcome(status=InvocationStatus.FAILED, attempt=1),
        RunOutcome(status=InvocationStatus.PENDING, attempt=1, retry_in_s=0.5),
        RunOutcome(status=None, attempt=1),
    ]
    assert alert_ids == ()  # the project has no alert channel
    rows = [load(db, i) for i in ids]
    assert [(r.status, r.last_error, r.response_status) for r in rows] == [
        (InvocationStatus.SUCCEEDED, None, 200),
        (InvocationStatus.FAILED, "HTTP 400", 400),
        (InvocationStatus.PENDING, "HTTP 503", 503),
        (InvocationStatus.PENDING, None, None),
    ]
    with db.begin() as session:
        wait_s = session.scalar(select(func.extract("epoch", rows[2].run_after - func.now())))
    assert 0 < wait_s <= 0.5
    assert rows[2].finished_at is None and rows[2].lease_expires_at is None
    assert [attempts(db, i)[0][:4] for i in ids] == [
        (1, "succeeded", 200, None),
        (1, "failed", 400, "HTTP 400"),
        (1, "error", 503, "HTTP 503"),
        (1, "succeeded", 204, "finished after its lease was taken back"),
    ]
    assert receiver.count == 1


def test_an_outcome_the_database_refuses_does_not_hold_up_the_rest_of_its_batch(
    db, settings: Settings
) -> None:
    core = dataclasses.replace(settings, deployment_id="batch", tenant_max_running=0)
    trigger = add_trigger(db)
    ids = [add_invocation(db, trigger, T0 + dt.timedelta(minutes=i)) for i in range(3)]
    started = sorted(start_batch(db, core, _keys(db, ids))[0],
                     key=lambda run: run.scheduled_for)
    # A text PostgreSQL cannot store (NUL): the batch's statement fails as a whole.
    refused = DeliveryResult(verdict=Verdict.PERMANENT, error="bad\x00text",
                             response_status=400)
    fine = DeliveryResult(verdict=Verdict.SUCCEEDED, response_status=200)

    outcomes, _ = finish_batch(db, core, list(zip(started, [fine, refused, fine],
                                                  strict=True)))

    assert outcomes == [
        RunOutcome(status=InvocationStatus.SUCCEEDED, attempt=1),
        RunOutcome(status=None, attempt=1),
        RunOutcome(status=InvocationStatus.SUCCEEDED, attempt=1),
    ]
    assert [load(db, i).status for i in ids] == [
        InvocationStatus.SUCCEEDED, InvocationStatus.RUNNING, InvocationStatus.SUCCEEDED]


def test_a_batch_skips_a_run_another_claim_holds_instead_of_waiting_for_it(
    db, settings: Settings
) -> None:
    core = dataclasses.replace(settings, deployment_id="batch", tenant_max_running=0)
    trigger = add_trigger(db)
    held, free = (add_invocation(db, trigger, T0 + dt.timedelta(minutes=i)) for i in range(2))
    keys = _keys(db, [held, free])
    with db.begin() as other:
        # Another batch's claim of the same run (a duplicate message), not committed yet.
        other.execute(select(Invocation.id).where(Invocation.id == held).with_for_update())
        result: list = []
        claiming = threading.Thread(
            target=lambda: result.append(start_batch(db, core, keys)[0]))
        claiming.start()
        claiming.join(timeout=10)
        assert not claiming.is_alive(), "the batch waited for the held row"
    assert [run.invocation_id for run in result[0]] == [free]
    assert load(db, held).status == InvocationStatus.PENDING
