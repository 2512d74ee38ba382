"""run_trigger end to end: real PostgreSQL, real Redis, a real worker, a real receiver.

Invocations are inserted pending (as the dispatcher records them) and their messages
published with ``tasks.publisher.publish_runs``; each test then waits, with a deadline,
for the invocation to reach its final state and compares exact values.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import os
import re
import threading
import time
import uuid
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from app import delivery, leases
from app.claims import take_expired_leases
from app.config import Settings
from app.delivery import DeliveryResult, Verdict
from app.enums import InvocationStatus
from app.leases import LEASE_GRACE_S
from app.models import Invocation, InvocationAttempt, Trigger
from app.netguard import REFUSED_MESSAGE
from app.runner import RunOutcome, run_invocation
from tasks.publisher import publish_runs
from tasks.run import RUN_TIME_LIMIT_S, run_trigger
from tests.support.receiver import Receiver, Reply
from tests.support.worker import DEFAULT_DEPLOYMENT_ID, WorkerProcess

pytestmark = pytest.mark.slow

T0 = dt.datetime(2026, 3, 7, 5, 0, tzinfo=dt.UTC)
DEADLINE_S = 20.0


def add_trigger(db: sessionmaker[Session], receiver: Receiver | None = None, **values: Any):
    row: dict[str, Any] = {
        "tenant_id": "t1",
        "project_id": "p1",
        "name": f"trigger-{uuid.uuid4().hex[:8]}",
        "cron_expression": "*/5 * * * *",
        "next_run_at": T0,
        "target_kind": "webhook",
        "webhook_url": receiver.url() if receiver else "https://example.com/hook",
        "payload": {"report": "daily"},
        "max_attempts": 3,
        "backoff_base_s": 0,
        "backoff_cap_s": 0,
        "timeout_s": 5,
    }
    row.update(values)
    with db.begin() as session:
        return session.execute(insert(Trigger).values(**row).returning(Trigger.id)).scalar_one()


def add_invocation(
    db: sessionmaker[Session], trigger_id: uuid.UUID, scheduled_for: dt.datetime = T0,
    **values: Any,
) -> uuid.UUID:
    row = {"trigger_id": trigger_id, "tenant_id": "t1", "project_id": "p1",
           "scheduled_for": scheduled_for, **values}
    with db.begin() as session:
        return session.execute(
            insert(Invocation).values(**row).returning(Invocation.id)
        ).scalar_one()


def load(db: sessionmaker[Session], invocation_id: uuid.UUID) -> Invocation:
    with db.begin() as session:
        return session.get_one(Invocation, invocation_id)


def attempts(db: sessionmaker[Session], invocation_id: uuid.UUID) -> list[tuple[Any, ...]]:
    """(number, outcome, response_status, error, deployment_id, finished?) per attempt."""
    with db.begin() as session:
        rows = session.execute(
            select(InvocationAttempt)
            .where(InvocationAttempt.invocation_id == invocation_id)
            .order_by(InvocationAttempt.number)
        ).scalars()
        return [(a.number, a.outcome, a.response_status, a.error, a.deployment_id,
                 a.finished_at is not None) for a in rows]


def wait_final(db: sessionmaker[Session], invocation_id: uuid.UUID) -> Invocation:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        invocation = load(db, invocation_id)
        if invocation.status.is_final:
            return invocation
        time.sleep(0.05)
    raise AssertionError(f"invocation still {invocation.status} after {DEADLINE_S} s")


def run(celery_client: Celery, db: sessionmaker[Session], invocation_id: uuid.UUID):
    publish_runs(celery_client, [invocation_id])
    return wait_final(db, invocation_id)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def task_done(invocation_id: uuid.UUID) -> str:
    return rf"Task cronbeat\.run_trigger\[{invocation_id}\] succeeded"


# --- delivery through the worker ------------------------------------------------------


def test_a_signed_webhook_is_delivered_once_and_recorded(
    db, celery_worker: WorkerProcess, celery_client, receiver: Receiver
) -> None:
    secret = new_secret()
    trigger_id = add_trigger(
        db, receiver, name="nightly", signing_secret=secret,
        webhook_headers={"X-Team-Token": "t0ken", "User-Agent": "spoofed"},
        message_template="{{ trigger.name }} #{{ attempt }} for {{ payload.report }}",
    )
    invocation_id = add_invocation(db, trigger_id)
    receiver.script(Reply(200, body="x" * 3000))

    invocation = run(celery_client, db, invocation_id)

    [request] = receiver.requests
    assert request.method == "POST"
    assert Webhook(secret).verify(request.body, request.headers) == {
        "trigger": {"id": str(trigger_id), "name": "nightly"},
        "invocation": str(invocation_id),
        "scheduled_for": "2026-03-07T05:00:00Z",
        "attempt": 1,
        "payload": {"report": "daily"},
        "message": "nightly #1 for daily",
    }
    assert request.headers["webhook-id"] == str(invocation_id)
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "Cronbeat/0.1"
    assert request.headers["X-Team-Token"] == "t0ken"
    assert invocation.status == InvocationStatus.SUCCEEDED
    assert invocation.attempt == 1
    assert invocation.response_status == 200
    assert invocation.response_excerpt == "x" * 1024
    assert invocation.last_error is None
    assert invocation.deployment_id == DEFAULT_DEPLOYMENT_ID
    assert invocation.finished_at is not None
    assert invocation.lease_expires_at is None
    assert attempts(db, invocation_id) == [
        (1, "succeeded", 200, None, DEFAULT_DEPLOYMENT_ID, True)
    ]


def test_a_duplicate_message_delivers_exactly_once(
    db, celery_worker: WorkerProcess, celery_client, receiver: Receiver
) -> None:
    invocation_id = add_invocation(db, add_trigger(db, receiver))
    hold = receiver.hold_next()

    # Two messages at once: the worker's two processes take one each. The second
    # arrives while the first delivers (the receiver holds it) and must do nothing.
    publish_runs(celery_client, [invocation_id, invocation_id])
    receiver.wait_for(1)
    celery_worker.wait_for_log(task_done(invocation_id), count=1)
    assert load(db, invocation_id).status == InvocationStatus.RUNNING
    hold.set()
    assert wait_final(db, invocation_id).status == InvocationStatus.SUCCEEDED
    celery_worker.wait_for_log(task_done(invocation_id), count=2)

    # A third, after it finished (a late redelivery), does nothing either.
    publish_runs(celery_client, [invocation_id])
    celery_worker.wait_for_log(task_done(invocation_id), count=3)

    assert receiver.count == 1
    assert load(db, invocation_id).attempt == 1
    assert [a[:2] for a in attempts(db, invocation_id)] == [(1, "succeeded")]


def test_a_killed_worker_s_invocation_is_retried_by_the_next_worker_after_its_lease(
    db, celery_worker: WorkerProcess, celery_client, receiver: Receiver
) -> None:
    invocation_id = add_invocation(db, add_trigger(db, receiver, timeout_s=5))
    hold = receiver.hold_next()
    publish_runs(celery_client, [invocation_id])
    receiver.wait_for(1)

    celery_worker.kill()
    hold.set()
    held = load(db, invocation_id)
    assert (held.status, held.attempt) == (InvocationStatus.RUNNING, 1)

    # The lease runs out (moved back rather than waited for), and the dispatcher's
    # sweep takes the invocation back and publishes it again.
    with db.begin() as session:
        session.execute(
            update(Invocation)
            .where(Invocation.id == invocation_id)
            .values(lease_expires_at=func.now() - dt.timedelta(seconds=1))
        )
    with db.begin() as session:
        now = session.scalar(select(func.now()))
        taken = take_expired_leases(session, now, limit=10)
    assert taken == [invocation_id]
    celery_worker.start(CRONBEAT_DEPLOYMENT_ID="test-worker-b")
    publish_runs(celery_client, taken)

    invocation = wait_final(db, invocation_id)
    assert invocation.status == InvocationStatus.SUCCEEDED
    assert invocation.attempt == 2
    assert invocation.deployment_id == "test-worker-b"
    assert invocation.last_error is None
    assert attempts(db, invocation_id) == [
        (1, "abandoned", None, "lease expired", DEFAULT_DEPLOYMENT_ID, True),
        (2, "succeeded", 200, None, "test-worker-b", True),
    ]
    assert receiver.count == 2


def test_503_503_200_succeeds_on_the_third_attempt(
    db, celery_worker, celery_client, receiver: Receiver
) -> None:
    invocation_id = add_invocation(db, add_trigger(db, receiver))
    receiver.script(Reply(503, body="busy"), Reply(503, body="busy"), Reply(200, body="ok"))

    invocation = run(celery_client, db, invocation_id)

    assert invocation.status == InvocationStatus.SUCCEEDED
    assert invocation.attempt == 3
    assert (invocation.response_status, invocation.response_excerpt) == (200, "ok")
    assert invocation.last_error is None
    assert [a[:4] for a in attempts(db, invocation_id)] == [
        (1, "error", 503, "HTTP 503"),
        (2, "error", 503, "HTTP 503"),
        (3, "succeeded", 200, None),
    ]
    assert receiver.count == 3


def test_503_on_every_attempt_fails_after_max_attempts(
    db, celery_worker, celery_client, receiver: Receiver
) -> None:
    invocation_id = add_invocation(db, add_trigger(db, receiver, max_attempts=2))
    receiver.script(Reply(503), Reply(503), Reply(200))

    invocation = run(celery_client, db, invocation_id)

    assert invocation.status == InvocationStatus.FAILED
    assert invocation.attempt == 2
    assert invocation.last_error == "gave up after 2 attempts: HTTP 503"
    assert [a[:3] for a in attempts(db, invocation_id)] == [(1, "error", 503), (2, "error", 503)]
    assert receiver.count == 2


def test_400_fails_at_once_without_a_retry(
    db, celery_worker, celery_client, receiver: Receiver
) -> None:
    invocation_id = add_invocation(db, add_trigger(db, receiver))
    receiver.script(Reply(400, body="bad request"), Reply(200))

    invocation = run(celery_client, db, invocation_id)

    assert invocation.status == InvocationStatus.FAILED
    assert invocation.attempt == 1
    assert invocation.last_error == "HTTP 400"
    assert (invocation.response_status, invocation.response_excerpt) == (400, "bad request")
    assert [a[:4] for a in attempts(db, invocation_id)] == [(1, "failed", 400, "HTTP 400")]
    assert receiver.count == 1


def test_429_with_retry_after_waits_at_least_that_long(
    db, celery_worker, celery_client, receiver: Receiver
) -> None:
    invocation_id = add_invocation(db, add_trigger(db, receiver))
    receiver.script(Reply(429, headers={"Retry-After": "2"}), Reply(200))

    invocation = run(celery_client, db, invocation_id)

    first, second = receiver.requests
    assert second.at - first.at >= 2.0
    assert invocation.status == InvocationStatus.SUCCEEDED
    assert invocation.attempt == 2
    assert [a[:3] for a in attempts(db, invocation_id)] == [
        (1, "error", 429), (2, "succeeded", 200)
    ]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda s, t: s.execute(delete(Trigger).where(Trigger.id == t)),
         "cancelled: the trigger was deleted"),
        (lambda s, t: s.execute(update(Trigger).where(Trigger.id == t).values(enabled=False)),
         "cancelled: the trigger is disabled"),
    ],
    ids=["deleted", "disabled"],
)
def test_an_invocation_whose_trigger_went_away_is_cancelled(
    db, celery_worker, celery_client, receiver: Receiver, change, reason: str
) -> None:
    trigger_id = add_trigger(db, receiver)
    invocation_id = add_invocation(db, trigger_id)
    with db.begin() as session:
        change(session, trigger_id)

    invocation = run(celery_client, db, invocation_id)

    assert invocation.status == InvocationStatus.CANCELLED
    assert invocation.last_error == reason
    assert invocation.attempt == 0
    assert invocation.finished_at is not None
    assert attempts(db, invocation_id) == []
    assert receiver.count == 0


def test_overlap_skip_records_skipped_while_an_earlier_run_is_running(
    db, celery_worker, celery_client, receiver: Receiver
) -> None:
    trigger_id = add_trigger(db, receiver, overlap_policy="skip")
    add_invocation(db, trigger_id, T0, status="running", attempt=1,
                   lease_expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    later = add_invocation(db, trigger_id, T0 + dt.timedelta(minutes=5))

    invocation = run(celery_client, db, later)

    assert invocation.status == InvocationStatus.SKIPPED
    assert invocation.last_error == "skipped: an earlier run of the trigger is running"
    assert invocation.attempt == 0
    assert receiver.count == 0


def test_overlap_allow_runs_beside_an_earlier_running_invocation(
    db, celery_worker, celery_client, receiver: Receiver
) -> None:
    trigger_id = add_trigger(db, receiver, overlap_policy="allow")
    add_invocation(db, trigger_id, T0, status="running", attempt=1,
                   lease_expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    later = add_invocation(db, trigger_id, T0 + dt.timedelta(minutes=5))

    assert run(celery_client, db, later).status == InvocationStatus.SUCCEEDED
    assert receiver.count == 1


def test_a_template_error_fails_after_one_attempt_with_the_error(
    db, celery_worker, celery_client, receiver: Receiver
) -> None:
    trigger_id = add_trigger(db, receiver, message_template="Hello {{ recipient }}")
    invocation_id = add_invocation(db, trigger_id)

    invocation = run(celery_client, db, invocation_id)

    error = "message template error: UndefinedError: 'recipient' is undefined"
    assert invocation.status == InvocationStatus.FAILED
    assert invocation.attempt == 1
    assert invocation.last_error == error
    assert attempts(db, invocation_id) == [
        (1, "failed", None, error, DEFAULT_DEPLOYMENT_ID, True)
    ]
    assert receiver.count == 0


def test_a_runaway_template_fails_after_one_attempt_instead_of_holding_the_worker(
    db, celery_worker, celery_client, receiver: Receiver
) -> None:
    # Before the bound on powers this ran in the worker for minutes, and with a
    # "* * * * *" trigger every worker process was soon doing the same.
    trigger_id = add_trigger(db, receiver, message_template="{{ ((9**999)**999)**999 }}")
    invocation_id = add_invocation(db, trigger_id)

    invocation = run(celery_client, db, invocation_id)

    error = "message template error: SecurityError: a power larger than 4096 bits"
    assert (invocation.status, invocation.attempt) == (InvocationStatus.FAILED, 1)
    assert invocation.last_error == error
    assert attempts(db, invocation_id) == [
        (1, "failed", None, error, DEFAULT_DEPLOYMENT_ID, True)
    ]
    assert receiver.count == 0


def test_a_header_value_outside_latin_1_fails_naming_the_header_not_its_value(
    db, celery_worker, celery_client, receiver: Receiver
) -> None:
    trigger_id = add_trigger(db, receiver, webhook_headers={"X-Token": "s3cret€"})
    invocation_id = add_invocation(db, trigger_id)

    invocation = run(celery_client, db, invocation_id)

    error = "webhook header X-Token contains characters outside latin-1"
    assert (invocation.status, invocation.attempt) == (InvocationStatus.FAILED, 1)
    assert invocation.last_error == error
    assert [a[:4] for a in attempts(db, invocation_id)] == [(1, "failed", None, error)]
    assert receiver.count == 0


def test_a_header_value_with_leading_space_is_sent_trimmed_and_never_echoed(
    db, celery_worker, celery_client, receiver: Receiver
) -> None:
    trigger_id = add_trigger(db, receiver, webhook_headers={"X-Token": " lead"})
    invocation_id = add_invocation(db, trigger_id)

    invocation = run(celery_client, db, invocation_id)

    assert invocation.status == InvocationStatus.SUCCEEDED
    assert invocation.last_error is None
    [request] = receiver.requests
    assert request.headers["X-Token"] == "lead"


def test_a_retry_after_in_unicode_digits_is_ignored_and_the_retry_still_happens(
    db, celery_worker, celery_client, receiver: Receiver
) -> None:
    # "²".isdigit() is True and float("²") raises: the error escaped the runner and the
    # invocation stayed running until its lease ran out.
    invocation_id = add_invocation(db, add_trigger(db, receiver))
    receiver.script(Reply(503, headers={"Retry-After": "²"}), Reply(200))

    invocation = run(celery_client, db, invocation_id)

    assert (invocation.status, invocation.attempt) == (InvocationStatus.SUCCEEDED, 2)
    assert [a[:4] for a in attempts(db, invocation_id)] == [
        (1, "error", 503, "HTTP 503"), (2, "succeeded", 200, None)
    ]


def test_run_trigger_s_hard_time_limit_lies_beyond_the_longest_lease() -> None:
    # The pool kills a run only after any attempt's lease (timeout_s <= 3600, plus the
    # grace) has run out and another grace has passed.
    assert run_trigger.time_limit == RUN_TIME_LIMIT_S == 3600 + 2 * LEASE_GRACE_S
    assert run_trigger.soft_time_limit is None


def test_a_task_target_puts_the_body_on_its_queue_in_redis(
    db, settings: Settings, celery_worker, celery_client
) -> None:
    queue = f"test.user-tasks.{uuid.uuid4().hex[:8]}"
    trigger_id = add_trigger(
        db, target_kind="task", webhook_url=None, task_name="tests.user_task",
        task_queue=queue, name="to-a-task",
    )
    invocation_id = add_invocation(db, trigger_id)

    invocation = run(celery_client, db, invocation_id)

    assert invocation.status == InvocationStatus.SUCCEEDED
    assert invocation.attempt == 1
    client = redis.Redis.from_url(settings.redis_url)
    try:
        [raw] = client.lrange(queue, 0, -1)
    finally:
        client.delete(queue)
        client.close()
    envelope = json.loads(raw)
    assert envelope["headers"]["task"] == "tests.user_task"
    args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
    assert kwargs == {}
    assert args == [{
        "trigger": {"id": str(trigger_id), "name": "to-a-task"},
        "invocation": str(invocation_id),
        "scheduled_for": "2026-03-07T05:00:00Z",
        "attempt": 1,
        "payload": {"report": "daily"},
        "message": None,
    }]


# --- the core, called directly --------------------------------------------------------


def no_task(name: str, body: Any, queue: str) -> None:
    raise AssertionError("no task target here")


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

    with caplog.at_level("ERROR", logger="app.runner"):
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


def test_a_claim_racing_a_committed_claim_claims_nothing(db, settings: Settings) -> None:
    invocation_id = add_invocation(db, add_trigger(db))
    outcomes: list[RunOutcome] = []

    def never_delivered(**_: Any) -> DeliveryResult:
        raise AssertionError("the losing claim delivered")

    def second_message() -> None:
        outcomes.append(run_invocation(db, settings, invocation_id, send_task=no_task,
                                       send_webhook_=never_delivered))

    with db.begin() as first:
        assert leases.claim_attempt(first, invocation_id, lease_s=60, deployment_id="a")
        # The second message reads the row as pending (the first claim is not committed
        # yet) and blocks on the row lock in its own claim, the tightest interleaving.
        racer = threading.Thread(target=second_message)
        racer.start()
        deadline = time.monotonic() + DEADLINE_S
        with db() as observer:
            while not observer.scalar(text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )):
                assert time.monotonic() < deadline, "the second claim never blocked"
                time.sleep(0.02)
                observer.rollback()  # a fresh snapshot of pg_stat_activity
    racer.join(DEADLINE_S)

    assert outcomes == [RunOutcome(status=None)]
    invocation = load(db, invocation_id)
    assert (invocation.status, invocation.attempt) == (InvocationStatus.RUNNING, 1)


def test_a_name_that_rebinds_to_loopback_is_refused_at_connect(
    db, settings: Settings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding: the name looked public when checked, and resolves to 127.0.0.1 when
    # urllib3 connects. The socket's peer address is checked too.
    monkeypatch.setattr(delivery, "check_host", lambda host, port: [])
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
        leases.lock_trigger_runs(first, trigger_id)
        assert leases.claim_attempt(first, earlier, lease_s=60, deployment_id="a")
        # The later run starts while the earlier claim is uncommitted: without the
        # trigger's lock it would see the earlier one pending, not running, and run.
        racer = threading.Thread(target=run_later)
        racer.start()
        deadline = time.monotonic() + DEADLINE_S
        with db() as observer:
            while not observer.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
            )):
                assert time.monotonic() < deadline, "the later run never waited"
                time.sleep(0.02)
                observer.rollback()
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
