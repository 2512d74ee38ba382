"""``cronbeat import celery-beat``: a user's beat_schedule (tests.sample_app.beat) planned,
applied, applied again, and run by the Cronbeat worker and the app's own worker."""

from __future__ import annotations

import collections
import datetime as dt
import time
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.enums import InvocationStatus
from app.firing.dispatch import DispatchOptions, dispatch_tick
from app.models import Invocation, Trigger
from cli.main import main
from messaging.publisher import publish_runs
from tests.support.runs import DEADLINE_S
from tests.support.sample_worker import SampleWorker

pytestmark = pytest.mark.slow

COMMAND = ["import", "celery-beat", "tests.sample_app.beat:app", "--tenant", "t1",
           "--project", "beat"]

PLAN = """\
celery beat schedule of tests.sample_app.beat:app (zone Europe/Berlin) into tenant t1, \
project beat: plan, nothing written (--apply writes it)
  create     add-every-2-s  every 2 s: sample.add(2, 3, scale=10) on sample
               note: named 'add-every-2-s'
  create     add-number  every 3 s: sample.add(1, 1)
  create     add-schedule  every 300 s: sample.add(4, 4)
  create     weekday-mornings  cron '0 9 * * 1-5' in Europe/Berlin: sample.add(0, 0)
  create     names-and-ranges  cron '0,15,30,45 8-18 * 1,7 *' in Europe/Berlin: \
sample.add(0, 1)
  create     first-of-month  cron '0 0 1 * *' in Europe/Berlin: sample.add(0, 2)
  create     sundays  cron '0 0 * * 0' in Europe/Berlin: sample.add(0, 3)
  create     expiring  cron '30 * * * *' in Europe/Berlin: sample.add(0, 4)
               note: expires 120 s: a run that cannot start within 120 s is recorded \
missed (misfire_grace_s, skip)
               note: options left out: priority
  create     relative  every 600 s: sample.add(0, 5)
               note: relative left out: the interval counts from when it is saved
  refused    'friday the 13th': day_of_month and day_of_week are both restricted: celery \
beat runs on days that match both, cron on days that match either
  refused    'sunset': solar schedules are not supported
  refused    'half-second': every 0.5 s: an interval is whole seconds from 1 to 31622400
  refused    'not-json': its args are not JSON
13 entries: 9 to create, 0 to update, 0 unchanged, 4 refused; 0 other triggers to delete
"""


@pytest.fixture
def operator(monkeypatch: pytest.MonkeyPatch, test_services: object) -> None:
    """The services' URLs in the environment (the CLI reads them), and "sample" among
    the operator's task queues."""
    monkeypatch.setenv("CRONBEAT_TASK_QUEUES", "celery,sample")


def _triggers(db: sessionmaker[Session]) -> dict[str, Any]:
    with db.begin() as session:
        return {t.name: t for t in session.execute(select(Trigger)).scalars()}


def test_the_plan_lists_each_entry_and_writes_nothing_then_apply_is_idempotent(
    db: sessionmaker[Session], operator: None, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(COMMAND) == 0
    assert capsys.readouterr().out == PLAN
    assert _triggers(db) == {}
    assert main([*COMMAND, "--apply"]) == 0
    applied = capsys.readouterr().out
    assert applied.splitlines()[-1] == (
        "13 entries: 9 created, 0 updated, 0 unchanged, 4 refused; 0 other triggers deleted")
    triggers = _triggers(db)
    assert sorted(triggers) == ["add-every-2-s", "add-number", "add-schedule", "expiring",
                                "first-of-month", "names-and-ranges", "relative", "sundays",
                                "weekday-mornings"]
    every_2 = triggers["add-every-2-s"]
    assert (every_2.interval_s, every_2.task_name, every_2.task_queue, every_2.task_args,
            every_2.task_kwargs, every_2.task_envelope) == (
        2, "sample.add", "sample", [2, 3], {"scale": 10}, False)
    assert (triggers["expiring"].cron_expression, triggers["expiring"].timezone,
            triggers["expiring"].misfire_grace_s, triggers["expiring"].misfire_policy.value
            ) == ("30 * * * *", "Europe/Berlin", 120, "skip")
    # First runs count from now: nothing is due, nothing was recorded missed.
    with db.begin() as session:
        now = session.execute(select(func.now())).scalar_one()
        assert session.execute(select(func.count()).select_from(Invocation)).scalar_one() == 0
    assert all(t.next_run_at > now for t in triggers.values())
    assert main([*COMMAND, "--apply"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "13 entries: 0 created, 0 updated, 9 unchanged, 4 refused; 0 other triggers deleted")
    assert {name: t.version for name, t in _triggers(db).items()} == dict.fromkeys(triggers, 1)


def test_the_imported_tasks_run_with_their_args_each_occurrence_once(
    db: sessionmaker[Session], operator: None, capsys: pytest.CaptureFixture[str],
    celery_worker: Any, celery_client: Celery, sample_worker: SampleWorker,
) -> None:
    celery_worker.restart(CRONBEAT_TASK_QUEUES="celery,sample")
    assert main([*COMMAND, "--apply"]) == 0
    capsys.readouterr()
    every_2 = _triggers(db)["add-every-2-s"]

    def publish(keys: Any, eta: dt.datetime | None = None) -> int:
        return publish_runs(celery_client, keys, eta=eta)

    # A tick half a second after the import, taking what falls due in the next 4 s: the
    # 2 s interval's first two occurrences (2 and 4 s after it was saved), held until
    # their instants, then run by the Cronbeat worker and the app's own.
    dispatch_tick(db, publish, DispatchOptions(hold_s=4),
                  now=every_2.start_at + dt.timedelta(seconds=0.5))
    with db.begin() as session:
        runs = list(session.execute(select(Invocation).where(
            Invocation.trigger_id == every_2.id).order_by(Invocation.scheduled_for)).scalars())
    assert [run.scheduled_for - every_2.start_at for run in runs] == [
        dt.timedelta(seconds=2), dt.timedelta(seconds=4)]

    def calls() -> list[dict[str, Any]]:
        return [call for call in sample_worker.calls(0)
                if call["cronbeat"] and call["cronbeat"]["trigger"] == str(every_2.id)]

    def statuses() -> set[InvocationStatus]:
        with db.begin() as session:
            return set(session.execute(select(Invocation.status).where(
                Invocation.id.in_([run.id for run in runs]))).scalars())

    # The task may run before its run is recorded succeeded (sent): wait for both.
    deadline = time.monotonic() + DEADLINE_S
    while len(calls()) < 2 or statuses() != {InvocationStatus.SUCCEEDED}:
        assert time.monotonic() < deadline, (calls(), statuses())
        time.sleep(0.1)
    time.sleep(1.0)  # a second call of either would show now
    assert collections.Counter(call["cronbeat"]["invocation"] for call in calls()) == {
        str(run.id): 1 for run in runs}
    assert all((call["args"], call["scale"], call["result"]) == ([2, 3], 10, 50)
               for call in calls())
