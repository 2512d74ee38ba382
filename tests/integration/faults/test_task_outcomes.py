"""Runs that wait for their task's own outcome (``"outcome": true``) while Redis dies: the
Procfile's worker, dispatcher and beat and a user's own Celery worker (tests.sample_app)
on a redis-server of their own, SIGKILLed mid-burst and started again after 1 s. The
task messages, the outcome reports and the attempts' claim keys all live in that Redis,
and all are lost. Every run still ends succeeded, the task body never runs more often
than Cronbeat made attempts, and no alert is raised."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.enums import InvocationStatus
from app.models import Alert, AlertChannel, Invocation, InvocationAttempt
from tests.integration.faults.conftest import db_now, one_time
from tests.support.fleet import PrivateRedis, ProcfileProcess, wait_until
from tests.support.receiver import Receiver
from tests.support.runs import new_secret
from tests.support.sample_worker import SampleWorker

pytestmark = pytest.mark.slow

RUNS = 60
#: Each task sleeps this long, so the kill finds some running and some queued.
TASK_S = 0.5
SUCCEEDED = re.compile(r"Task sample\.sleep\[[^\]]+\] succeeded")


@pytest.fixture
def user_worker(redis_server: PrivateRedis, tmp_path: Path) -> Iterator[SampleWorker]:
    worker = SampleWorker(redis_server.url, tmp_path)
    worker.start()
    yield worker
    worker.stop()
    worker.client.close()


def _executions(worker: SampleWorker) -> int:
    """The task bodies that ran to their end, over every start of the user's worker."""
    return sum(len(SUCCEEDED.findall(log.read_text(errors="replace")))
               for log in worker.log_dir.glob("sample-worker-*.log"))


def test_outcome_runs_all_succeed_through_a_redis_restart_and_run_once_per_attempt(
    db: sessionmaker[Session], channel_receiver: Receiver, redis_server: PrivateRedis,
    user_worker: SampleWorker, fleet: Callable[..., dict[str, ProcfileProcess]],
) -> None:
    processes = fleet(("worker", "dispatcher", "beat"), redis_server,
                      CRONBEAT_TASK_QUEUES="celery,sample")
    with db.begin() as session:  # watched: a run that failed would raise its alert
        session.execute(insert(AlertChannel), [
            {"tenant_id": f"t{n}", "project_id": "p1", "name": "ops",
             "url": channel_receiver.url("/alerts"), "signing_secret": new_secret()}
            for n in range(10)])
    one_time(db, "", db_now(db) + dt.timedelta(seconds=2), RUNS, target_kind="task",
             webhook_url=None, task_name="sample.sleep", task_queue="sample",
             task_args=[TASK_S], task_outcome=True, timeout_s=5, max_attempts=5)

    wait_until(lambda: _executions(user_worker) >= 10, "the first task bodies", 60)
    redis_server.kill()
    time.sleep(1.0)
    redis_server.start()
    if user_worker.process is not None and user_worker.process.poll() is not None:
        user_worker.start()  # its supervisor would: Celery may end it on a lost broker

    def final() -> bool:
        with db.begin() as session:
            return session.scalar(select(func.count()).where(
                Invocation.status.in_([InvocationStatus.PENDING, InvocationStatus.RUNNING]
                                      ))) == 0
    wait_until(final, "every run final", 240, every_s=0.5)
    time.sleep(2)  # an alert or a late task body would show now
    with db.begin() as session:
        statuses = Counter(session.execute(select(Invocation.status)).scalars())
        attempts = session.scalar(select(func.count()).select_from(InvocationAttempt))
        alerts = session.scalar(select(func.count()).select_from(Alert))
    assert statuses == {InvocationStatus.SUCCEEDED: RUNS}
    # Every run's body ran, and never more often than Cronbeat attempted it: a lost
    # report costs a retry, never a body run that Cronbeat did not ask for.
    assert RUNS <= _executions(user_worker) <= attempts
    assert alerts == 0
    for name in ("worker", "dispatcher", "beat"):
        assert processes[name].alive, processes[name].log_text()[-3000:]
