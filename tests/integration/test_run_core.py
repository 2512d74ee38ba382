"""The run's core called directly (no worker): real PostgreSQL, a real receiver."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import threading
from typing import Any

import pytest
from sqlalchemy import NullPool, create_engine, func, select, text, update
from standardwebhooks.webhooks import Webhook

from app.config import Settings
from app.db import make_engine, make_session_factory
from app.delivery import send as delivery
from app.delivery.netguard import REFUSED_MESSAGE
from app.delivery.send import DeliveryResult, Verdict
from app.enums import InvocationStatus
from app.firing.runner import ROW_BUSY_RETRY_S, RunOutcome, run_invocation
from app.models import Invocation
from app.queries import leases, locks
from app.queries.sweep import take_expired_leases
from tests.support.receiver import Receiver
from tests.support.runs import (
    DEADLINE_S,
    T0,
    add_invocation,
    add_trigger,
    attempts,
    claim,
    finish_for_retry,
    load,
    new_secret,
    no_task,
    wait_for_a_lock_wait,
)

pytestmark = pytest.mark.slow



def test_a_private_target_is_refused_when_private_targets_are_not_allowed(
    db, settings: Settings, receiver: Receiver
) -> None:
    strict = dataclasses.replace(settings, allow_private_targets=False, deployment_id="core")
    invocation_id = add_invocation(db, add_trigger(db, receiver))

    outcome = run_invocation(db, strict, invocation_id, send_task=no_task)

    assert outcome == RunOutcome(status=InvocationStatus.FAILED, attempt=1)
    invocation = load(db, invocation_id)
    assert invocation.status == InvocationStatus.FAILED
    assert invocation.last_error == REFUSED_MESSAGE
    assert "127.0.0.1" not in invocation.last_error
    assert [a[:4] for a in attempts(db, invocation_id)] == [
        (1, "failed", None, REFUSED_MESSAGE)
    ]
    assert receiver.count == 0


def test_a_requested_cancel_closes_a_pending_invocation(db, settings: Settings) -> None:
    invocation_id = add_invocation(db, add_trigger(db), cancel_requested=True)

    outcome = run_invocation(db, settings, invocation_id, send_task=no_task)

    assert outcome == RunOutcome(status=InvocationStatus.CANCELLED, attempt=0)
    assert load(db, invocation_id).last_error == "cancelled: cancel requested"


def test_a_retry_that_is_not_due_yet_is_not_claimed_but_republished(
    db, settings: Settings
) -> None:
    invocation_id = add_invocation(
        db, add_trigger(db), run_after=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    )

    outcome = run_invocation(db, settings, invocation_id, send_task=no_task)

    assert outcome.status is None
    assert outcome.retry_in_s is not None and 55 < outcome.retry_in_s <= 60
    assert (load(db, invocation_id).status, attempts(db, invocation_id)) == ("pending", [])


def test_an_attempt_that_lost_its_lease_records_only_its_attempt_row(
    db, settings: Settings
) -> None:
    invocation_id = add_invocation(db, add_trigger(db))

    def deliver_while_the_sweep_takes_it_back(**_: Any) -> DeliveryResult:
        with db.begin() as session:
            session.execute(
                update(Invocation).where(Invocation.id == invocation_id)
                .values(lease_expires_at=func.now() - dt.timedelta(seconds=1))
            )
        with db.begin() as session:
            take_expired_leases(session, session.scalar(select(func.now())), limit=10)
        return DeliveryResult(verdict=Verdict.SUCCEEDED, response_status=200,
                              response_excerpt="late")

    outcome = run_invocation(db, settings, invocation_id, send_task=no_task,
                             send_webhook_=deliver_while_the_sweep_takes_it_back)

    assert outcome == RunOutcome(status=None, attempt=1)
    invocation = load(db, invocation_id)
    # The sweep's decision stands: pending for the next attempt, not succeeded.
    assert (invocation.status, invocation.attempt) == (InvocationStatus.PENDING, 1)
    assert invocation.response_status is None
    [attempt] = attempts(db, invocation_id)
    assert attempt[:3] == (1, "succeeded", 200)
    assert re.fullmatch("finished after its lease was taken back", attempt[3])


def test_a_private_target_s_address_stays_out_of_the_error(
    db, settings: Settings, receiver: Receiver
) -> None:
    strict = dataclasses.replace(settings, allow_private_targets=False)
    # "localhost" is how db.internal looks to the guard: a name resolving inside.
    url = receiver.url().replace("127.0.0.1", "localhost")
    invocation_id = add_invocation(db, add_trigger(db, webhook_url=url))

    run_invocation(db, strict, invocation_id, send_task=no_task)

    invocation = load(db, invocation_id)
    assert invocation.status == InvocationStatus.FAILED
    assert invocation.last_error == REFUSED_MESSAGE
    assert not re.search(r"127\.0\.0\.1|::1", invocation.last_error)
    assert receiver.count == 0


def test_an_out_of_range_port_fails_for_good_when_private_targets_are_refused(
    db, settings: Settings
) -> None:
    strict = dataclasses.replace(settings, allow_private_targets=False)
    invocation_id = add_invocation(
        db, add_trigger(db, webhook_url="http://h.example:99999/hook/t0ken")
    )

    outcome = run_invocation(db, strict, invocation_id, send_task=no_task)

    assert outcome == RunOutcome(status=InvocationStatus.FAILED, attempt=1)
    invocation = load(db, invocation_id)
    assert invocation.last_error == "the webhook URL has an invalid port"
    assert invocation.lease_expires_at is None


def test_an_unexpected_error_in_delivery_fails_the_invocation_with_its_type_only(
    db, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    invocation_id = add_invocation(db, add_trigger(db))

    def crash(**_: Any) -> DeliveryResult:
        raise RuntimeError("Authorization: Bearer s3cret")

    with caplog.at_level("ERROR", logger="app.firing.runner"):
        outcome = run_invocation(db, settings, invocation_id, send_task=no_task,
                                 send_webhook_=crash)

    assert outcome == RunOutcome(status=InvocationStatus.FAILED, attempt=1)
    invocation = load(db, invocation_id)
    error = "delivery failed with an internal error (RuntimeError)"
    assert (invocation.status, invocation.last_error) == (InvocationStatus.FAILED, error)
    assert invocation.lease_expires_at is None
    assert [a[:4] for a in attempts(db, invocation_id)] == [(1, "failed", None, error)]
    [record] = [r for r in caplog.records if r.action == "run.delivery_crashed"]
    assert (record.invocation_id, record.attempt, record.error_type) == (
        str(invocation_id), 1, "RuntimeError"
    )


@pytest.mark.parametrize("cap", [0, 32])
def test_a_claim_racing_a_committed_claim_claims_nothing(
    db, settings: Settings, cap: int
) -> None:
    capped = dataclasses.replace(settings, tenant_max_running=cap)
    invocation_id = add_invocation(db, add_trigger(db))
    outcomes: list[RunOutcome] = []

    def never_delivered(**_: Any) -> DeliveryResult:
        raise AssertionError("the losing claim delivered")

    def second_message() -> None:
        outcomes.append(run_invocation(db, capped, invocation_id, send_task=no_task,
                                       send_webhook_=never_delivered))

    with db.begin() as first:
        assert claim(first, invocation_id, deployment_id="a", tenant_cap=cap) == 1
        racer = threading.Thread(target=second_message)
        racer.start()
        if cap:
            # The second message reads the row as pending (the first claim is not
            # committed yet) and blocks on the tenant's claim lock, the tightest
            # interleaving.
            wait_for_a_lock_wait(db, "the second claim blocked")
        else:
            # No cap, no tenant lock: the claim skips the locked row and is done before
            # the first one commits. The row was busy, so its message comes back in a
            # moment (to find the run taken), rather than being dropped.
            racer.join(DEADLINE_S)
            assert outcomes == [RunOutcome(status=None, retry_in_s=ROW_BUSY_RETRY_S)]
    racer.join(DEADLINE_S)

    assert outcomes[-1:] == [RunOutcome(status=None, retry_in_s=ROW_BUSY_RETRY_S)
                             if not cap else RunOutcome(status=None)]
    invocation = load(db, invocation_id)
    assert (invocation.status, invocation.attempt, invocation.parked_at) == (
        InvocationStatus.RUNNING, 1, None)


def test_a_loopback_target_past_the_address_check_is_refused_at_the_socket(
    db, settings: Settings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check before connecting is skipped (as a bug would): the transport still looks
    # at the address of every socket before opening it (test_delivery_guard.py counts
    # the handshakes).
    monkeypatch.setattr(delivery, "check_address", lambda address: None)
    strict = dataclasses.replace(settings, allow_private_targets=False)
    invocation_id = add_invocation(db, add_trigger(db, receiver))

    outcome = run_invocation(db, strict, invocation_id, send_task=no_task)

    assert outcome == RunOutcome(status=InvocationStatus.FAILED, attempt=1)
    assert load(db, invocation_id).last_error == REFUSED_MESSAGE
    assert receiver.count == 0


def test_overlap_skip_sees_an_earlier_claim_that_commits_while_it_waits(
    db, settings: Settings
) -> None:
    trigger_id = add_trigger(db, overlap_policy="skip")
    earlier = add_invocation(db, trigger_id, T0)
    later = add_invocation(db, trigger_id, T0 + dt.timedelta(minutes=5))
    outcomes: list[RunOutcome] = []

    def run_later() -> None:
        outcomes.append(run_invocation(db, settings, later, send_task=no_task))

    with db.begin() as first:
        assert claim(first, earlier, deployment_id="a") == 1
        locks.lock_trigger_runs(first, trigger_id)
        # The later run starts while the earlier claim is uncommitted: without the
        # trigger's lock it would see the earlier one pending, not running, and run.
        racer = threading.Thread(target=run_later)
        racer.start()
        wait_for_a_lock_wait(db, "the later run waited", advisory=True)
    racer.join(DEADLINE_S)

    assert outcomes == [RunOutcome(status=InvocationStatus.SKIPPED, attempt=0)]


def test_the_signature_verifies_when_the_clock_arrives_in_another_zone() -> None:
    # psycopg2 hands back now() in the session's zone; the signature must not care.
    secret = new_secret()
    body = '{"x":1}'
    now = dt.datetime.now(dt.timezone(dt.timedelta(hours=-7)))
    headers = delivery.build_headers(
        {}, invocation_id="inv-1", body=body, signing_secret=secret, now=now
    )
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert Webhook(secret).verify(body, headers) == {"x": 1}


def never_delivered(**_: Any) -> DeliveryResult:
    raise AssertionError("delivered")


def test_overlap_skip_skips_an_earlier_occurrence_s_retry_while_a_later_one_runs(
    db, settings: Settings
) -> None:
    # 12:00 failed and waits for its retry; 12:01 started meanwhile. The retry coming
    # due must not run beside it.
    now = dt.datetime.now(dt.UTC)
    trigger_id = add_trigger(db, overlap_policy="skip")
    retry = add_invocation(db, trigger_id, T0, attempt=1, last_error="HTTP 503",
                           run_after=now - dt.timedelta(seconds=1))
    add_invocation(db, trigger_id, T0 + dt.timedelta(minutes=1), status="running",
                   attempt=1, lease_expires_at=now + dt.timedelta(minutes=5))

    outcome = run_invocation(db, settings, retry, send_task=no_task,
                             send_webhook_=never_delivered)

    assert outcome == RunOutcome(status=InvocationStatus.SKIPPED, attempt=1)
    invocation = load(db, retry)
    assert invocation.last_error == "skipped: another run of the trigger is running"
    assert [a[0] for a in attempts(db, retry)] == []


def test_overlap_skip_runs_when_no_other_invocation_of_the_trigger_runs(
    db, settings: Settings, receiver: Receiver
) -> None:
    trigger_id = add_trigger(db, receiver, overlap_policy="skip")
    add_invocation(db, trigger_id, T0 + dt.timedelta(minutes=1), status="succeeded",
                   attempt=1, finished_at=dt.datetime.now(dt.UTC))
    invocation_id = add_invocation(db, trigger_id, T0)

    outcome = run_invocation(db, settings, invocation_id, send_task=no_task)

    assert outcome == RunOutcome(status=InvocationStatus.SUCCEEDED, attempt=1)
    assert receiver.count == 1


ONE_TIME = {"cron_expression": None, "run_at": T0 + dt.timedelta(hours=1),
            "next_run_at": None, "enabled": False,
            "last_scheduled_for": T0 + dt.timedelta(hours=1)}
PAUSED_CRON = {"enabled": False, "next_run_at": None}


@pytest.mark.parametrize(
    ("trigger", "invocation", "status"),
    [
        # Fired at T0, re-armed (run_at T0+1h) and fired again: T0's retry still runs.
        (ONE_TIME, {"attempt": 1, "last_error": "HTTP 503"}, InvocationStatus.SUCCEEDED),
        (ONE_TIME, {}, InvocationStatus.SUCCEEDED),
        (PAUSED_CRON, {}, InvocationStatus.CANCELLED),
        (PAUSED_CRON, {"manual": True}, InvocationStatus.SUCCEEDED),
    ],
    ids=["one-time-re-armed-retry", "one-time", "paused-cron", "paused-cron-manual"],
)
def test_only_a_paused_cron_trigger_s_scheduled_runs_are_cancelled_for_enabled_false(
    db, settings: Settings, receiver: Receiver, trigger: dict[str, Any],
    invocation: dict[str, Any], status: InvocationStatus,
) -> None:
    trigger_id = add_trigger(db, receiver, **trigger)
    invocation_id = add_invocation(db, trigger_id, T0, **invocation)

    run_invocation(db, settings, invocation_id, send_task=no_task)

    row = load(db, invocation_id)
    assert row.status == status
    assert receiver.count == (0 if status is InvocationStatus.CANCELLED else 1)
    if status is InvocationStatus.CANCELLED:
        assert row.last_error == "cancelled: the trigger is disabled"


def test_a_one_time_trigger_s_run_is_cancelled_when_its_pause_requested_the_cancel(
    db, settings: Settings, receiver: Receiver
) -> None:
    # How pausing stops a one-time trigger's runs: the API sets cancel_requested.
    trigger_id = add_trigger(db, receiver, **ONE_TIME)
    invocation_id = add_invocation(db, trigger_id, T0, cancel_requested=True)

    outcome = run_invocation(db, settings, invocation_id, send_task=no_task)

    assert outcome == RunOutcome(status=InvocationStatus.CANCELLED, attempt=0)
    assert receiver.count == 0


@pytest.mark.parametrize(
    ("queue", "allowed", "error"),
    [
        ("cronbeat.runs", {"celery"},
         "the task queue 'cronbeat.runs' is not one of the operator's queues"),
        (None, {"reports"}, "the task queue 'celery' is not one of the operator's queues"),
    ],
    ids=["ours", "default-not-allowed"],
)
def test_a_task_target_on_a_queue_the_operator_does_not_allow_fails_for_good(
    db, settings: Settings, queue: str | None, allowed: set[str], error: str
) -> None:
    # Rows saved before the API checked the queue (or before the operator narrowed
    # CRONBEAT_TASK_QUEUES) must not reach our queues or kombu's keys.
    narrowed = dataclasses.replace(settings, task_queues=frozenset(allowed))
    trigger_id = add_trigger(db, target_kind="task", webhook_url=None,
                             task_name="tests.user_task", task_queue=queue)
    invocation_id = add_invocation(db, trigger_id)

    outcome = run_invocation(db, narrowed, invocation_id, send_task=no_task)

    assert outcome == RunOutcome(status=InvocationStatus.FAILED, attempt=1)
    invocation = load(db, invocation_id)
    assert (invocation.status, invocation.last_error) == (InvocationStatus.FAILED, error)
    assert [a[:4] for a in attempts(db, invocation_id)] == [(1, "failed", None, error)]


# --- a database blip while finishing (a database of its own) ----------------------------


@pytest.fixture
def own_db(test_services, settings: Settings):
    """A fresh database, its settings and session factory, and a switch to block it."""
    name = test_services.new_database()
    own = dataclasses.replace(settings, database_url=test_services.url(name))
    engine = make_engine(own)
    admin = create_engine(test_services.admin_url, isolation_level="AUTOCOMMIT",
                          poolclass=NullPool)

    def allow_connections(allowed: bool) -> None:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {allowed}'))
            if not allowed:
                conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})

    try:
        yield own, make_session_factory(engine), allow_connections
    finally:
        allow_connections(True)
        engine.dispose()
        admin.dispose()


def test_a_database_blip_after_the_delivery_is_waited_out_and_the_outcome_recorded(
    own_db, caplog: pytest.LogCaptureFixture
) -> None:
    # Without the retries the finish raised, the row stayed running, and once the
    # lease ran out the sweep delivered the occurrence again.
    own, sessions, allow_connections = own_db
    invocation_id = add_invocation(sessions, add_trigger(sessions))
    reopened = threading.Timer(1.2, allow_connections, args=(True,))

    def deliver_then_lose_the_database(**_: Any) -> DeliveryResult:
        allow_connections(False)
        reopened.start()
        return DeliveryResult(verdict=Verdict.SUCCEEDED, response_status=200,
                              response_excerpt="ok")

    with caplog.at_level("WARNING", logger="app.firing.runner"):
        outcome = run_invocation(sessions, own, invocation_id, send_task=no_task,
                                 send_webhook_=deliver_then_lose_the_database)
    reopened.join()

    assert outcome == RunOutcome(status=InvocationStatus.SUCCEEDED, attempt=1)
    invocation = load(sessions, invocation_id)
    assert (invocation.status, invocation.response_status) == (InvocationStatus.SUCCEEDED, 200)
    assert invocation.lease_expires_at is None
    assert [a[:4] for a in attempts(sessions, invocation_id)] == [(1, "succeeded", 200, None)]
    retries = [r for r in caplog.records if r.action == "run.finish_retry"]
    assert retries and all(r.invocation_id == str(invocation_id) for r in retries)


def test_a_finish_tried_again_after_its_commit_landed_keeps_what_it_recorded(
    db, settings: Settings
) -> None:
    # The first try committed and only its acknowledgement was lost: the next try
    # must not overwrite the attempt as one that lost its lease.
    invocation_id = add_invocation(db, add_trigger(db))
    with db.begin() as session:
        attempt = claim(session, invocation_id, deployment_id="a")
        assert attempt == 1
    with db.begin() as session:
        assert leases.recorded_finish(session, invocation_id, attempt) is None
        finish_for_retry(session, invocation_id, attempt, delay_s=30,
                         error="HTTP 503", response_status=503)
    with db.begin() as session:
        status, run_after_in_s = leases.recorded_finish(session, invocation_id, attempt)
    assert status == InvocationStatus.PENDING
    assert 25 < run_after_in_s <= 30


@pytest.mark.parametrize("named", ["its own day", "another day"])
def test_a_run_named_by_id_and_day_is_delivered_whether_or_not_the_day_is_right(
    db, settings: Settings, receiver: Receiver, named: str
) -> None:
    # The day only narrows the statements to a partition; a wrong one (a forged or
    # mangled message) finds nothing there and the path by id runs it all the same.
    invocation_id = add_invocation(db, add_trigger(db, receiver))
    day = T0 if named == "its own day" else T0 - dt.timedelta(days=3)

    outcome = run_invocation(db, settings, invocation_id, send_task=no_task, scheduled_for=day)

    assert outcome == RunOutcome(status=InvocationStatus.SUCCEEDED, attempt=1)
    assert [a[:2] for a in attempts(db, invocation_id)] == [(1, "succeeded")]
    assert receiver.count == 1
