"""Deploys with real processes: workers, dispatchers, beats and CLI loops of two
deployments, standbys, guarded activation, a real receiver, exact counts."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
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

from app.deploys import processes
from app.enums import InvocationStatus
from app.models import Invocation, InvocationAttempt, Trigger
from tests.conftest import ROOT
from tests.support.receiver import Receiver
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.slow

DEADLINE_S = 45.0
RUNS = "cronbeat.runs"
ALERTS = "cronbeat.alerts"
DISPATCH = "cronbeat.dispatch"
# A beat ticks every second here; a run may start this long after its time: one tick,
# the worker's pick-up and the delivery, with room for a loaded 2-core machine.
MAX_START_LATENESS_S = 5.0


def _db_now(db: sessionmaker[Session]) -> dt.datetime:
    with db.begin() as session:
        return session.execute(select(func.now())).scalar_one()


def _one_time(db: sessionmaker[Session], url: str, run_at: dt.datetime,
              name: str | None = None, timeout_s: int = 30) -> uuid.UUID:
    with db.begin() as session:
        return session.execute(
            insert(Trigger).values(
                tenant_id="t1", project_id="p1", name=name or f"once-{uuid.uuid4().hex[:8]}",
                run_at=run_at, next_run_at=run_at, target_kind="webhook",
                webhook_url=url, timeout_s=timeout_s, max_attempts=1,
            ).returning(Trigger.id)
        ).scalar_one()


def _load(db: sessionmaker[Session], receiver: Receiver, count: int,
          every_s: float, first_in_s: float = 2.0) -> list[uuid.UUID]:
    """A steady load: ``count`` one-time triggers due one every ``every_s`` from now."""
    now = _db_now(db)
    return [_one_time(db, receiver.url(), now + dt.timedelta(seconds=first_in_s + n * every_s))
            for n in range(count)]


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=ROOT,
        env={**os.environ, "CRONBEAT_ALLOW_PRIVATE_TARGETS": "true", **env},
        capture_output=True, text=True, timeout=60,
    )


def _invocations(db: sessionmaker[Session]) -> list[Invocation]:
    with db.begin() as session:
        return list(session.execute(select(Invocation)).scalars())


def _attempts(db: sessionmaker[Session]) -> list[Any]:
    with db.begin() as session:
        return list(session.execute(
            select(Invocation.trigger_id, Invocation.scheduled_for,
                   InvocationAttempt.deployment_id, InvocationAttempt.started_at,
                   InvocationAttempt.outcome)
            .join(Invocation, Invocation.id == InvocationAttempt.invocation_id)
        ).all())


def _registry(db: sessionmaker[Session]) -> list[processes.ProcessView]:
    with db.begin() as session:
        return processes.live(session)


def _roles(db: sessionmaker[Session], deployment_id: str) -> Counter[tuple[str, str, Any]]:
    return Counter((row.kind.value, row.role.value, row.consuming)
                   for row in _registry(db) if row.deployment_id == deployment_id)


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _all_final(db: sessionmaker[Session], count: int) -> bool:
    invocations = _invocations(db)
    return len(invocations) == count and all(i.status.is_final for i in invocations)


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

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ticks_sent(self) -> int:
        return self.log_text().count("Sending due task")

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


class Loop:
    """A real `cronbeat dispatch` loop of one deployment, ticking every second."""

    def __init__(self, log_dir: Path, deployment_id: str) -> None:
        self.out_path, self.err_path = log_dir / "loop.out", log_dir / "loop.err"
        self._out, self._err = self.out_path.open("wb"), self.err_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "dispatch"], cwd=ROOT,
            env={**os.environ, "CRONBEAT_DEPLOYMENT_ID": deployment_id,
                 "CRONBEAT_TICK_SECONDS": "1"},
            stdout=self._out, stderr=self._err,
        )

    def ticks(self) -> int:
        return len(self.out_path.read_text().splitlines())

    def log_text(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self._out.close()
        self._err.close()
        return self.process.returncode


def _assert_once_each(db: sessionmaker[Session], receiver: Receiver,
                      ids: list[uuid.UUID]) -> list[Any]:
    """Every trigger ran exactly once and succeeded; every delivery arrived once."""
    invocations = _invocations(db)
    assert Counter(i.trigger_id for i in invocations) == Counter(ids)
    assert {i.status for i in invocations} == {InvocationStatus.SUCCEEDED}
    attempts = _attempts(db)
    assert len(attempts) == len(ids)
    deliveries = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert deliveries == Counter(str(i.id) for i in invocations)
    return attempts


def test_v2_started_as_standbys_before_its_activation_takes_over_at_once(
    db: sessionmaker[Session], start_worker: Callable[..., WorkerProcess],
    receiver: Receiver, beats: Callable[[str], Beat],
) -> None:
    v1_worker = start_worker(CRONBEAT_DEPLOYMENT_ID="v1")
    v1_beat = beats("v1")
    _wait(lambda: _roles(db, "v1") == Counter({("worker", "active", True): 1,
                                               ("beat", "active", None): 1}), "v1 registered")
    activated_v1 = _cli("deploy", "activate", "v1")
    assert activated_v1.returncode == 0, activated_v1.stderr
    ids = _load(db, receiver, count=40, every_s=0.5)

    # v2's processes come up while v1 runs the load: they wait, taking nothing.
    v2_worker = start_worker(queues=RUNS, CRONBEAT_DEPLOYMENT_ID="v2")
    v2_dispatcher = start_worker(queues=DISPATCH, concurrency=1, CRONBEAT_DEPLOYMENT_ID="v2")
    v2_beat = beats("v2")
    standbys = Counter({("worker", "standby", False): 1, ("dispatcher", "standby", False): 1,
                        ("beat", "standby", None): 1})
    _wait(lambda: _roles(db, "v2") == standbys, "v2's standbys registered")
    receiver.wait_for(10, timeout_s=DEADLINE_S)
    assert {a.deployment_id for a in _attempts(db)} == {"v1"}
    assert v2_beat.ticks_sent() == 0
    for log_text in (v2_worker.log_text(), v2_dispatcher.log_text(), v2_beat.log_text()):
        assert "standby: deployment v2 is not activated (v1 is, generation 1)" in log_text

    activated = _cli("deploy", "activate", "v2")
    assert activated.returncode == 0, activated.stderr
    assert json.loads(activated.stdout) == {"deployment_id": "v2", "generation": 2,
                                            "changed": True}
    activated_at = _db_now(db)
    _wait(lambda: _all_final(db, len(ids)), "every run final")

    attempts = _assert_once_each(db, receiver, ids)
    after = [a for a in attempts if a.started_at > activated_at]
    assert after and {a.deployment_id for a in after} == {"v2"}
    assert {a.deployment_id for a in attempts} == {"v1", "v2"}
    lateness_s = max((a.started_at - a.scheduled_for).total_seconds() for a in attempts)
    assert lateness_s < MAX_START_LATENESS_S, lateness_s
    # v1's processes are up, take no work, and say so.
    _wait(lambda: _roles(db, "v1") == Counter({("worker", "superseded", False): 1,
                                               ("beat", "superseded", None): 1}),
          "v1 superseded in the registry")
    assert _roles(db, "v2") == Counter({("worker", "active", True): 1,
                                        ("dispatcher", "active", True): 1,
                                        ("beat", "active", None): 1})
    sent = v1_beat.ticks_sent()
    time.sleep(3)
    assert v1_beat.ticks_sent() == sent
    assert v2_beat.ticks_sent() >= 2
    assert v1_worker.alive and v1_beat.alive
    assert "superseded: deployment v1 is superseded by v2 (generation 2)" in v1_worker.log_text()
    assert "superseded: deployment v1 is superseded by v2 (generation 2)" in v1_beat.log_text()


def test_v2_started_after_a_forced_activation_runs_everything_that_waited(
    db: sessionmaker[Session], start_worker: Callable[..., WorkerProcess],
    receiver: Receiver, beats: Callable[[str], Beat],
) -> None:
    v1_worker = start_worker(CRONBEAT_DEPLOYMENT_ID="v1")
    beats("v1")
    _wait(lambda: len(_roles(db, "v1")) == 2, "v1 registered")
    assert _cli("deploy", "activate", "v1").returncode == 0
    ids = _load(db, receiver, count=20, every_s=0.5)
    receiver.wait_for(4, timeout_s=DEADLINE_S)

    refused = _cli("deploy", "activate", "v2")
    assert refused.returncode == 1
    assert "deployment v2 has no live worker" in refused.stderr
    forced = _cli("deploy", "activate", "v2", "--force")
    assert forced.returncode == 0, forced.stderr
    activated_at = _db_now(db)
    v1_worker.wait_for_log(r"stopped consuming", timeout_s=DEADLINE_S)
    time.sleep(2)
    started_since = [a for a in _attempts(db) if a.started_at > activated_at]
    assert started_since == []  # nobody runs anything until v2's processes come

    start_worker(CRONBEAT_DEPLOYMENT_ID="v2")
    beats("v2")
    _wait(lambda: _all_final(db, len(ids)), "every run final")
    attempts = _assert_once_each(db, receiver, ids)
    after = [a for a in attempts if a.started_at > activated_at]
    assert after and {a.deployment_id for a in after} == {"v2"}


def test_a_superseded_beat_stays_up_sending_nothing_and_a_rollback_wakes_it(
    db: sessionmaker[Session], beats: Callable[[str], Beat]
) -> None:
    beat = beats("v1")
    _wait(lambda: beat.ticks_sent() >= 2, "v1 beat ticking (gating off)")
    assert _cli("deploy", "activate", "v1", "--force").returncode == 0
    assert _cli("deploy", "activate", "v2", "--force").returncode == 0
    _wait(lambda: "superseded: deployment v1 is superseded by v2" in beat.log_text(),
          "the superseded log line")
    time.sleep(1.5)
    sent = beat.ticks_sent()
    time.sleep(3)
    assert beat.alive and beat.ticks_sent() == sent
    assert _roles(db, "v1") == Counter({("beat", "superseded", None): 1})
    health = _cli("health", "beat", "--pid", str(beat.process.pid))
    assert health.returncode == 1
    assert health.stderr.startswith("unhealthy: superseded, it takes no work; stop it")

    assert _cli("deploy", "activate", "v1", "--force").returncode == 0
    _wait(lambda: beat.ticks_sent() >= sent + 2, "the rolled-back beat ticking again")
    assert beat.alive
    assert _cli("health", "beat", "--pid", str(beat.process.pid)).returncode == 0


def test_a_cli_dispatch_loop_stands_by_ticks_once_activated_and_stays_up_when_superseded(
    db: sessionmaker[Session], tmp_path: Path
) -> None:
    assert _cli("deploy", "activate", "v1", "--force").returncode == 0
    loop = Loop(tmp_path, "v2")
    try:
        _wait(lambda: _roles(db, "v2") == Counter({("dispatcher", "standby", None): 1}),
              "the loop registered as a standby")
        time.sleep(2)
        assert loop.ticks() == 0
        assert _cli("deploy", "activate", "v2", "--force").returncode == 0
        _wait(lambda: loop.ticks() >= 2, "the loop ticking")
        assert json.loads(loop.out_path.read_text().splitlines()[0])["claimed"] == 0
        assert _cli("deploy", "activate", "v3", "--force").returncode == 0
        _wait(lambda: "superseded: deployment v2 is superseded by v3" in loop.log_text(),
              "the superseded log line")
        time.sleep(1.5)
        ticks = loop.ticks()
        time.sleep(2.5)
        assert loop.ticks() == ticks
        assert loop.process.poll() is None
    finally:
        assert loop.stop() == 0
    assert _roles(db, "v2") == Counter()  # a clean stop removes its row


class Silent:
    """A TCP server on loopback that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)  # the kernel completes the handshakes; nobody reads

    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def close(self) -> None:
        self.sock.close()


def test_four_deliveries_hanging_for_their_whole_timeout_do_not_delay_a_tick(
    db: sessionmaker[Session], start_worker: Callable[..., WorkerProcess],
    receiver: Receiver, beats: Callable[[str], Beat],
) -> None:
    silent = Silent()
    # Four delivery threads, each held by a hanging delivery.
    worker = start_worker(queues=RUNS, concurrency=4, CRONBEAT_DEPLOYMENT_ID="v1",
                          CRONBEAT_RUN_CONCURRENCY="4")
    try:
        start_worker(queues=DISPATCH, concurrency=1, CRONBEAT_DEPLOYMENT_ID="v1")
        beats("v1")
        now = _db_now(db)
        hung = [_one_time(db, silent.url(), now, name=f"hang-{n}", timeout_s=600)
                for n in range(4)]
        _wait(lambda: sum(i.status is InvocationStatus.RUNNING for i in _invocations(db)) == 4,
              "four deliveries hanging")
        later = _load(db, receiver, count=5, every_s=1.0, first_in_s=1.0)
        _wait(lambda: len(_invocations(db)) == 9, "the later triggers claimed")
        invocations = {i.trigger_id: i for i in _invocations(db)}
        # Every worker slot is still held by a hanging delivery...
        assert {invocations[t].status for t in hung} == {InvocationStatus.RUNNING}
        # ...and the ticks claimed every later trigger on time all the same.
        claim_lateness_s = [
            (invocations[t].created_at - invocations[t].scheduled_for).total_seconds()
            for t in later
        ]
        assert max(claim_lateness_s) < MAX_START_LATENESS_S, claim_lateness_s
        assert {invocations[t].status for t in later} == {InvocationStatus.PENDING}
        assert receiver.count == 0
    finally:
        # The hanging deliveries would hold a warm shutdown for their whole timeout.
        worker.kill()
        silent.close()


def test_health_follows_the_worker_role_and_the_gate_restores_a_cancelled_consumer(
    db: sessionmaker[Session], start_worker: Callable[..., WorkerProcess],
) -> None:
    assert _cli("deploy", "activate", "v1", "--force").returncode == 0
    # Runs and alerts have consumers of the worker's own; the dispatch queue is the
    # Celery consumer's, whose cancelled queue the gate restores below.
    worker = start_worker(queues=f"{RUNS},{ALERTS},{DISPATCH}", CRONBEAT_DEPLOYMENT_ID="v2")
    pid = str(worker.pid)
    standby = _cli("health", "worker", "--pid", pid)
    assert standby.returncode == 0, standby.stderr
    assert standby.stdout.startswith("healthy: standby until its deployment is activated")

    assert _cli("deploy", "activate", "v2", "--force").returncode == 0
    _wait(lambda: _roles(db, "v2") == Counter({("worker", "active", True): 1}), "v2 consuming")
    active = _cli("health", "worker", "--pid", pid)
    assert active.returncode == 0, active.stderr
    assert re.match(r"healthy  deployment v2  worker .* active +consuming .*cronbeat\.runs",
                    active.stdout), active.stdout

    # Someone cancels the Celery consumer's queue by hand (the old way a deploy stranded
    # a worker): the gate consumes again, since its deployment is the active one. (The
    # run and alert queues are the worker's own consumers', which remote control does
    # not reach.)
    assert worker.name
    cancel = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks.worker", "control", "cancel_consumer",
         DISPATCH, "-d", f"{worker.name}@{socket.gethostname()}"],
        cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=60,
    )
    assert cancel.returncode == 0, cancel.stderr
    worker.wait_for_log(r"Canceling queue cronbeat\.dispatch", count=2, timeout_s=DEADLINE_S)
    worker.wait_for_log(r"Started consuming from cronbeat\.dispatch", count=2,
                        timeout_s=DEADLINE_S)

    assert _cli("deploy", "activate", "v3", "--force").returncode == 0
    _wait(lambda: _roles(db, "v2") == Counter({("worker", "superseded", False): 1}),
          "v2 superseded")
    superseded = _cli("health", "worker", "--pid", pid)
    assert superseded.returncode == 1
    assert superseded.stderr.startswith("unhealthy: superseded, it takes no work; stop it")
    assert worker.alive
    worker.stop()
    gone = _cli("health", "worker", "--pid", pid)
    assert gone.returncode == 1
    assert gone.stderr.startswith(f"unhealthy: no live worker process on {socket.gethostname()}")


def test_two_beats_ticking_for_several_seconds_give_one_invocation_per_occurrence(
    db: sessionmaker[Session], celery_worker: WorkerProcess, receiver: Receiver,
    beats: Callable[[str], Beat],
) -> None:
    now = _db_now(db)
    ids = [_one_time(db, receiver.url(), now + dt.timedelta(seconds=1 + n)) for n in range(8)]
    first, second = beats("test-worker"), beats("test-worker")
    receiver.wait_for(len(ids), timeout_s=DEADLINE_S)
    time.sleep(3)  # both beats keep ticking; nothing may fire again
    invocations = _invocations(db)
    assert Counter(i.trigger_id for i in invocations) == Counter(ids)
    _wait(lambda: all(i.status.is_final for i in _invocations(db)), "all final")
    assert {i.status for i in _invocations(db)} == {InvocationStatus.SUCCEEDED}
    deliveries = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert deliveries == Counter(str(i.id) for i in invocations)
    assert first.alive and second.alive
    assert first.ticks_sent() >= 3 and second.ticks_sent() >= 3
