"""Task targets against a user's own Celery app (tests.sample_app) in a worker process of
its own, as a shop runs it: its task is called as it is, with the occurrence's facts in
a header it can read."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.enums import InvocationStatus
from app.models import InvocationAttempt
from messaging.publisher import publish_runs
from tests.integration.test_alerts import add_channel, alerts_received
from tests.support.receiver import Receiver
from tests.support.runs import (
    DEADLINE_S,
    T0,
    add_invocation,
    add_trigger,
    run,
    wait_final,
)
from tests.support.sample_worker import SampleWorker

pytestmark = pytest.mark.slow



def _task_trigger(db: sessionmaker[Session], name: str, task: str, **values: Any) -> Any:
    return add_trigger(db, target_kind="task", webhook_url=None, task_name=task,
                       task_queue="sample", name=name, **values)


def _attempts(db: sessionmaker[Session], invocation_id: Any) -> list[Any]:
    with db.begin() as session:
        return list(session.execute(
            select(InvocationAttempt.number, InvocationAttempt.outcome,
                   InvocationAttempt.error, InvocationAttempt.started_at,
                   InvocationAttempt.finished_at)
            .where(InvocationAttempt.invocation_id == invocation_id)
            .order_by(InvocationAttempt.number)).all())


def test_the_users_task_receives_its_stored_args_and_kwargs_and_reads_the_header(
    db: sessionmaker[Session], celery_worker: Any, celery_client: Celery,
    sample_worker: SampleWorker,
) -> None:
    celery_worker.restart(CRONBEAT_TASK_QUEUES="celery,sample")
    trigger_id = add_trigger(db, target_kind="task", webhook_url=None, task_name="sample.add",
                             task_queue="sample", name="add-up", task_args=[2, 3],
                             task_kwargs={"scale": 10})
    invocation_id = add_invocation(db, trigger_id)

    assert run(celery_client, db, invocation_id).status is InvocationStatus.SUCCEEDED
    assert sample_worker.calls(1) == [{
        "args": [2, 3], "scale": 10, "result": 50,
        "cronbeat": {"invocation": str(invocation_id), "trigger": str(trigger_id),
                     "trigger_name": "add-up", "scheduled_for": "2026-03-07T05:00:00Z",
                     "attempt": 1}}]


def test_with_outcome_on_a_run_ends_as_the_task_did_success_with_its_duration(
    db: sessionmaker[Session], celery_worker: Any, celery_client: Celery,
    sample_worker: SampleWorker,
) -> None:
    celery_worker.restart(CRONBEAT_TASK_QUEUES="celery,sample")
    trigger_id = _task_trigger(db, "slept", "sample.sleep", task_args=[0.5],
                               task_outcome=True, timeout_s=10)
    invocation_id = add_invocation(db, trigger_id)

    invocation = run(celery_client, db, invocation_id)

    assert (invocation.status, invocation.attempt) == (InvocationStatus.SUCCEEDED, 1)
    excerpt = invocation.response_excerpt
    assert excerpt is not None and excerpt.startswith("the task succeeded in 0.5"), excerpt
    [call] = sample_worker.calls(1)
    assert call["cronbeat"]["invocation"] == str(invocation_id)
    assert set(call["cronbeat"]) == {"invocation", "trigger", "trigger_name",
                                     "scheduled_for", "attempt", "report_to", "token"}
    assert "cronbeat: outcome reports on" in sample_worker.log_text()


def test_a_task_that_raises_is_retried_with_backoff_then_fails_with_its_exception(
    db: sessionmaker[Session], celery_worker: Any, celery_client: Celery,
    sample_worker: SampleWorker, receiver: Receiver,
) -> None:
    celery_worker.restart(CRONBEAT_TASK_QUEUES="celery,sample")
    secret = add_channel(db, receiver)
    trigger_id = _task_trigger(db, "failing", "sample.fail", task_args=["no ledger"],
                               task_outcome=True, max_attempts=3, backoff_base_s=1,
                               backoff_cap_s=1,
                               next_run_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    invocation_id = add_invocation(db, trigger_id)

    invocation = run(celery_client, db, invocation_id)

    assert (invocation.status, invocation.attempt) == (InvocationStatus.FAILED, 3)
    assert invocation.last_error == "gave up after 3 attempts: ValueError: no ledger"
    attempts = _attempts(db, invocation_id)
    assert [(a.number, a.outcome, a.error) for a in attempts] == [
        (n, "error", "ValueError: no ledger") for n in (1, 2, 3)]
    assert all(later.started_at >= earlier.finished_at
               for earlier, later in itertools.pairwise(attempts))
    assert [call["cronbeat"]["attempt"] for call in sample_worker.calls(3)] == [1, 2, 3]
    # The project's channel gets the failure alert, with the task's exception.
    receiver.wait_for(1, timeout_s=30)
    [alert] = alerts_received(receiver, secret)
    assert (alert["type"], alert["invocation"]["id"], alert["invocation"]["status"],
            alert["invocation"]["last_error"]) == (
        "trigger.failing", str(invocation_id), "failed", "ValueError: no ledger")


def test_a_task_past_its_timeout_fails_and_skip_sees_it_running(
    db: sessionmaker[Session], celery_worker: Any, celery_client: Celery,
    sample_worker: SampleWorker,
) -> None:
    celery_worker.restart(CRONBEAT_TASK_QUEUES="celery,sample")
    trigger_id = _task_trigger(db, "slow", "sample.sleep", task_args=[4],
                               task_outcome=True, timeout_s=2, max_attempts=1,
                               overlap_policy="skip")
    first = add_invocation(db, trigger_id)
    publish_runs(celery_client, [first])
    sample_worker.calls(1)  # the task is running: the run waits for its outcome
    second = add_invocation(db, trigger_id, T0 + dt.timedelta(minutes=5))
    assert run(celery_client, db, second).status is InvocationStatus.SKIPPED
    ended = wait_final(db, first)
    assert (ended.status, ended.last_error) == (
        InvocationStatus.FAILED,
        "gave up after 1 attempts: the task did not report its end within timeout_s (2 s)")


def test_a_forged_report_for_another_tenant_s_run_is_refused_and_changes_nothing(
    db: sessionmaker[Session], celery_worker: Any, celery_client: Celery,
    sample_worker: SampleWorker,
) -> None:
    celery_worker.restart(CRONBEAT_TASK_QUEUES="celery,sample")
    # Tenant t1's own task shows t1 its report key and its own token.
    own = add_invocation(db, _task_trigger(db, "own", "sample.add", task_args=[1, 2],
                                           task_outcome=True))
    assert run(celery_client, db, own).status is InvocationStatus.SUCCEEDED
    [seen] = sample_worker.calls(1)
    # Tenant t2's run fails for real; t1 forges its success with what it has seen.
    victim = add_invocation(db, _task_trigger(db, "victim", "sample.sleep", task_args=[3],
                                              task_outcome=True, timeout_s=10,
                                              max_attempts=1, tenant_id="t2"),
                            tenant_id="t2")
    publish_runs(celery_client, [victim])
    sample_worker.calls(2)
    forged = {"invocation": str(victim), "attempt": 1, "token": seen["cronbeat"]["token"],
              "event": "finished", "ok": False, "error": "Forged: t1 wrote this"}
    sample_worker.client.rpush(seen["cronbeat"]["report_to"], json.dumps(forged))
    ended = wait_final(db, victim)
    assert ended.status is InvocationStatus.SUCCEEDED  # the task's own outcome
    assert celery_worker.log_text().count("task report: refused") == 1


def test_a_worker_killed_mid_task_the_attempt_is_retried_and_its_message_never_reruns(
    db: sessionmaker[Session], celery_worker: Any, celery_client: Celery, settings: Settings,
    tmp_path: Path,
) -> None:
    celery_worker.restart(CRONBEAT_TASK_QUEUES="celery,sample")
    # acks_late, and Redis hands an unacknowledged message out again after 2 s.
    sample = SampleWorker(settings.redis_url, tmp_path, SAMPLE_VISIBILITY_TIMEOUT_S="2")
    sample.clear()
    sample.start()
    try:
        trigger_id = _task_trigger(db, "killed", "sample.sleep", task_args=[2],
                                   task_outcome=True, timeout_s=4, max_attempts=2,
                                   backoff_base_s=0, backoff_cap_s=0)
        invocation_id = add_invocation(db, trigger_id)
        publish_runs(celery_client, [invocation_id])
        sample.calls(1)
        sample.kill()  # mid-task: attempt 1's message stays unacknowledged
        sample.start()
        ended = wait_final(db, invocation_id)
        assert (ended.status, ended.attempt) == (InvocationStatus.SUCCEEDED, 2)
        # Attempt 1's message comes back to the new worker, which refuses to run it again.
        deadline = time.monotonic() + DEADLINE_S
        while "started already: not run again" not in sample.log_text():
            assert time.monotonic() < deadline, sample.log_text()[-3000:]
            time.sleep(0.1)
        attempts = [call["cronbeat"]["attempt"] for call in sample.calls(2)]
        assert sorted(attempts) == [1, 2]  # each body ran once
    finally:
        sample.stop()
        sample.clear()
        sample.client.close()
