"""Deploy supersession with real processes: workers, CLI dispatchers and beats of two
deployments, a real receiver, exact counts."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.enums import InvocationStatus
from app.models import Invocation, InvocationAttempt, Trigger
from tests.conftest import ROOT
from tests.support.receiver import Receiver
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.slow

DEADLINE_S = 30.0


def _db_now(db: sessionmaker[Session]) -> dt.datetime:
    with db.begin() as session:
        return session.execute(select(func.now())).scalar_one()


def _one_time(db: sessionmaker[Session], receiver: Receiver, run_at: dt.datetime,
              name: str | None = None) -> uuid.UUID:
    with db.begin() as session:
        return session.execute(
            insert(Trigger).values(
                tenant_id="t1", project_id="p1", name=name or f"once-{uuid.uuid4().hex[:8]}",
                run_at=run_at, next_run_at=run_at, target_kind="webhook",
                webhook_url=receiver.url(), timeout_s=30, max_attempts=1,
            ).returning(Trigger.id)
        ).scalar_one()


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=ROOT,
        env={**os.environ, "CRONBEAT_ALLOW_PRIVATE_TARGETS": "true", **env},
        capture_output=True, text=True, timeout=60,
    )


def _invocations(db: sessionmaker[Session]) -> list[Invocation]:
    with db.begin() as session:
        return list(session.execute(select(Invocation)).scalars())


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_after_activation_every_new_attempt_runs_on_the_new_deployment(
    db: sessionmaker[Session], start_worker: Callable[..., WorkerProcess], receiver: Receiver
) -> None:
    assert _cli("deploy", "activate", "v1").returncode == 0
    v1 = start_worker(CRONBEAT_DEPLOYMENT_ID="v1")
    now = _db_now(db)

    # A slow run already going on v1 when v2 is activated: the receiver holds it.
    held = receiver.hold_next()
    slow_id = _one_time(db, receiver, now, name="slow")
    first = _cli("dispatch", "--once", CRONBEAT_DEPLOYMENT_ID="v1")
    assert first.returncode == 0, first.stderr
    # (The tick the v1 activation kicked may have claimed it first; either way, once.)
    receiver.wait_for(1)
    assert len(_invocations(db)) == 1

    activated = _cli("deploy", "activate", "v2")
    assert activated.returncode == 0, activated.stderr
    assert json.loads(activated.stdout) == {"deployment_id": "v2", "generation": 2,
                                            "changed": True}
    activated_at = _db_now(db)

    # v1's dispatcher commits nothing after the call.
    due_id = _one_time(db, receiver, _db_now(db), name="after-activation")
    stale = _cli("dispatch", "--once", CRONBEAT_DEPLOYMENT_ID="v1")
    assert stale.returncode == 1 and "superseded by v2" in stale.stderr
    assert len(_invocations(db)) == 1

    # v2's dispatcher records it; only v1's worker runs, so it gets the message first,
    # hands it back untouched and stops consuming.
    fresh = _cli("dispatch", "--once", CRONBEAT_DEPLOYMENT_ID="v2")
    assert fresh.returncode == 0, fresh.stderr
    v1.wait_for_log(r"superseded", timeout_s=DEADLINE_S)
    after = next(i for i in _invocations(db) if i.trigger_id == due_id)
    assert (after.status, after.attempt) == (InvocationStatus.PENDING, 0)

    v2 = start_worker(CRONBEAT_DEPLOYMENT_ID="v2")
    receiver.wait_for(2)
    held.set()
    _wait(lambda: all(i.status.is_final for i in _invocations(db)), "both invocations final")

    with db.begin() as session:
        attempts = session.execute(
            select(Invocation.trigger_id, InvocationAttempt.deployment_id,
                   InvocationAttempt.started_at, InvocationAttempt.outcome)
            .join(Invocation, Invocation.id == InvocationAttempt.invocation_id)
        ).all()
    by_trigger = {a.trigger_id: a for a in attempts}
    assert len(attempts) == 2
    assert (by_trigger[slow_id].deployment_id, by_trigger[slow_id].outcome) == ("v1", "succeeded")
    assert by_trigger[slow_id].started_at < activated_at
    assert (by_trigger[due_id].deployment_id, by_trigger[due_id].outcome) == ("v2", "succeeded")
    assert all(a.deployment_id == "v2" for a in attempts if a.started_at > activated_at)
    statuses = sorted((i.trigger_id == slow_id, i.status, i.deployment_id)
                      for i in _invocations(db))
    assert statuses == [(False, InvocationStatus.SUCCEEDED, "v2"),
                        (True, InvocationStatus.SUCCEEDED, "v1")]
    assert receiver.count == 2
    assert v2.alive


class Beat:
    """A real `celery beat` process of one deployment, ticking every second."""

    def __init__(self, data_dir: Path, deployment_id: str) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "beat.log"
        self._log = self.log_path.open("wb")
        env = {**os.environ, "CRONBEAT_DEPLOYMENT_ID": deployment_id,
               "CRONBEAT_TICK_SECONDS": "1", "CRONBEAT_DATA_DIR": str(data_dir)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks.worker", "beat", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self._log.close()


@pytest.fixture
def beats(tmp_path: Path) -> Iterator[Callable[[str], Beat]]:
    started: list[Beat] = []

    def start(deployment_id: str) -> Beat:
        beat = Beat(tmp_path / f"beat-{len(started)}", deployment_id)
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.stop()


def test_two_beats_ticking_for_several_seconds_give_one_invocation_per_occurrence(
    db: sessionmaker[Session], celery_worker: WorkerProcess, receiver: Receiver,
    beats: Callable[[str], Beat],
) -> None:
    now = _db_now(db)
    ids = [_one_time(db, receiver, now + dt.timedelta(seconds=1 + n)) for n in range(8)]
    first, second = beats("test-worker"), beats("test-worker")
    receiver.wait_for(len(ids), timeout_s=DEADLINE_S)
    time.sleep(3)  # both beats keep ticking; nothing may fire again
    invocations = _invocations(db)
    assert Counter(i.trigger_id for i in invocations) == Counter(ids)
    _wait(lambda: all(i.status.is_final for i in _invocations(db)), "all final")
    assert {i.status for i in _invocations(db)} == {InvocationStatus.SUCCEEDED}
    deliveries = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert deliveries == Counter(str(i.id) for i in invocations)
    assert first.process.poll() is None and second.process.poll() is None
    ticks: dict[str, Any] = {}
    for beat in (first, second):
        ticks[str(beat.log_path)] = beat.log_path.read_text().count("dispatch_due_triggers")
    assert all(count >= 3 for count in ticks.values()), ticks


def test_a_superseded_beat_logs_it_and_exits_cleanly(
    db: sessionmaker[Session], beats: Callable[[str], Beat]
) -> None:
    assert _cli("deploy", "activate", "v1").returncode == 0
    beat = beats("v1")
    time.sleep(2)
    assert beat.process.poll() is None
    assert _cli("deploy", "activate", "v2").returncode == 0
    assert beat.process.wait(timeout=20) == 0
    assert "superseded by v2" in beat.log_path.read_text()


def test_a_looping_cli_dispatcher_ticks_until_superseded_then_exits_cleanly(
    db: sessionmaker[Session],
) -> None:
    assert _cli("deploy", "activate", "v1").returncode == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dispatch"], cwd=ROOT,
        env={**os.environ, "CRONBEAT_DEPLOYMENT_ID": "v1", "CRONBEAT_TICK_SECONDS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        assert first["claimed"] == 0
        assert _cli("deploy", "activate", "v2").returncode == 0
        assert process.wait(timeout=20) == 0
        assert process.stderr is not None
        assert "superseded by v2" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
