"""run_trigger end to end: real PostgreSQL, real Redis, a real worker, a real receiver.

Invocations are inserted pending (as the dispatcher records them) and their messages
published with ``messaging.publisher.publish_runs``; each test then waits, with a deadline,
for the invocation to reach its final state and compares exact values. The core called
directly is in ``test_run_core.py``; deadlines of slow targets in ``test_run_deadlines.py``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any

import pytest
import redis
from sqlalchemy import delete, func, select, update
from standardwebhooks.webhooks import Webhook

from app.config import Settings
from app.enums import InvocationStatus
from app.models import Invocation, Trigger
from app.queries.leases import LEASE_GRACE_S
from app.queries.sweep import take_expired_leases
from messaging.publisher import publish_runs
from tasks.run import RUN_TIME_LIMIT_S, run_trigger
from tests.support.receiver import Receiver, Reply
from tests.support.runs import (
    T0,
    add_invocation,
    add_trigger,
    attempts,
    load,
    new_secret,
    run,
    task_done,
    wait_final,
)
from tests.support.worker import DEFAULT_DEPLOYMENT_ID, WorkerProcess

pytestmark = pytest.mark.slow

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
    # The worker runs the Procfile's pool (threads): SIGKILL takes the whole process.
    assert celery_worker.pool == "threads"
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
    assert [key.id for key in taken] == [invocation_id]
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
    assert [r.headers["webhook-id"] for r in receiver.requests] == [str(invocation_id)] * 2


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
    assert invocation.last_error == "skipped: another run of the trigger is running"
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

    error = "message template error: 'recipient' is undefined"
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
    # Sections over a 4,000-item payload nested three deep would be 64 billion steps:
    # with a "* * * * *" trigger every worker process would soon be doing the same.
    trigger_id = add_trigger(
        db, receiver, payload={"items": list(range(4000))},
        message_template="{{#payload.items}}{{#payload.items}}{{#payload.items}}."
                         "{{/payload.items}}{{/payload.items}}{{/payload.items}}")
    invocation_id = add_invocation(db, trigger_id)

    invocation = run(celery_client, db, invocation_id)

    error = "message template takes more than 100000 steps to render"
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


def _user_task_message(settings: Settings, queue: str) -> dict[str, Any]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        [raw] = client.lrange(queue, 0, -1)
    finally:
        client.delete(queue)
        client.close()
    return dict(json.loads(raw))


def _run_task_target(db: Any, settings: Settings, celery_worker: Any, celery_client: Any,
                     **values: Any) -> tuple[Any, Any, Invocation, dict[str, Any]]:
    """Run one task target (on a queue of its own, which the worker may use); its trigger
    and invocation ids, the invocation as it ended, and the message left on the queue."""
    queue = f"test.user-tasks.{uuid.uuid4().hex[:8]}"
    celery_worker.restart(CRONBEAT_TASK_QUEUES=f"celery,{queue}")
    trigger_id = add_trigger(db, target_kind="task", webhook_url=None, task_queue=queue,
                             name="to-a-task", **values)
    invocation_id = add_invocation(db, trigger_id)
    invocation = run(celery_client, db, invocation_id)
    return trigger_id, invocation_id, invocation, _user_task_message(settings, queue)


def test_a_task_target_calls_the_task_with_its_own_arguments_and_the_facts_in_a_header(
    db, settings: Settings, celery_worker, celery_client
) -> None:
    trigger_id, invocation_id, invocation, envelope = _run_task_target(
        db, settings, celery_worker, celery_client, task_name="tests.add",
        task_args=[2, 3], task_kwargs={"scale": 10})

    assert (invocation.status, invocation.attempt) == (InvocationStatus.SUCCEEDED, 1)
    assert envelope["headers"]["task"] == "tests.add"
    assert envelope["headers"]["cronbeat"] == {
        "invocation": str(invocation_id), "trigger": str(trigger_id),
        "trigger_name": "to-a-task", "scheduled_for": "2026-03-07T05:00:00Z", "attempt": 1}
    args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
    assert (args, kwargs) == ([2, 3], {"scale": 10})


def test_a_task_target_with_the_envelope_gets_the_body_as_its_one_argument(
    db, settings: Settings, celery_worker, celery_client
) -> None:
    trigger_id, invocation_id, invocation, envelope = _run_task_target(
        db, settings, celery_worker, celery_client, task_name="tests.user_task",
        task_envelope=True)

    assert invocation.status == InvocationStatus.SUCCEEDED
    assert invocation.attempt == 1
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

