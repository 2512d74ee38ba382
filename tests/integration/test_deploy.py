"""Deploy supersession: activation, the fence, and what other deployments' processes may do."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.deploys import deploy, processes
from app.deploys.deploy import (
    ActivationRefused,
    Observation,
    Superseded,
    activate,
    fence,
    may_run,
    read_state,
    role_of,
)
from app.enums import InvocationStatus, ProcessKind, ProcessRole
from app.firing.dispatch import DispatchOptions, dispatch_tick
from app.firing.runner import run_invocation
from app.models import Deployment, Invocation, Trigger
from tests.conftest import ROOT
from tests.support.processes import register
from tests.support.runs import add_trigger

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 1, 12, 0, 20, tzinfo=UTC)


def _no_publish(ids: Any) -> int:
    return len(ids)


def _add_due_trigger(db: sessionmaker[Session]) -> uuid.UUID:
    return add_trigger(db, cron_expression="0 * * * *",
                       next_run_at=dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC))


def _count(db: sessionmaker[Session]) -> int:
    with db.begin() as session:
        return session.execute(select(func.count()).select_from(Invocation)).scalar_one()


@pytest.mark.parametrize(
    ("active", "mine", "allowed"),
    [(None, None, True), (None, "v1", True), ("v1", "v1", True), ("v2", "v1", False),
     ("v1", None, False)],
)
def test_only_the_active_deployment_may_run_once_one_was_activated(
    active: str | None, mine: str | None, allowed: bool
) -> None:
    assert may_run(active, mine) is allowed


def test_activation_bumps_the_generation_once_per_change_and_a_retry_is_a_no_op(
    db: sessionmaker[Session],
) -> None:
    results = []
    for deployment_id in ("v1", "v1", "v2", "v2", "v1"):
        with db.begin() as session:
            a = activate(session, deployment_id, force=True)
        results.append((a.deployment_id, a.generation, a.changed))
    assert results == [
        ("v1", 1, True), ("v1", 1, False), ("v2", 2, True), ("v2", 2, False), ("v1", 3, True)
    ]
    with db.begin() as session:
        state = read_state(session)
    assert (state.generation, state.active_deployment_id) == (3, "v1")


def test_a_superseded_dispatcher_claims_and_commits_nothing(db: sessionmaker[Session]) -> None:
    trigger_id = _add_due_trigger(db)
    with db.begin() as session:
        activate(session, "v2", force=True)
    with pytest.raises(Superseded, match=r"v1 is not the active one \(v2 is, generation 1\)"):
        dispatch_tick(db, _no_publish, DispatchOptions(deployment_id="v1"), now=NOW)
    assert _count(db) == 0
    with db.begin() as session:
        assert session.get_one(Trigger, trigger_id).next_run_at == dt.datetime(
            2026, 6, 1, 12, 0, tzinfo=UTC)
    report = dispatch_tick(db, _no_publish, DispatchOptions(deployment_id="v2"), now=NOW)
    assert (report.claimed, report.created) == (1, 1)


def test_two_activations_in_quick_succession_leave_the_last_one_active_and_only_it_claims(
    db: sessionmaker[Session],
) -> None:
    _add_due_trigger(db)
    barrier = threading.Barrier(2)
    done: list[str] = []

    def activate_in_thread(deployment_id: str) -> None:
        barrier.wait()
        with db.begin() as session:
            activate(session, deployment_id, force=True)
        done.append(deployment_id)

    threads = [threading.Thread(target=activate_in_thread, args=(d,)) for d in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    with db.begin() as session:
        state = read_state(session)
    # Whichever committed last is the active one; both changed it.
    assert (state.active_deployment_id, state.generation) == (done[-1], 2)
    loser = done[0]
    with pytest.raises(Superseded):
        dispatch_tick(db, _no_publish, DispatchOptions(deployment_id=loser), now=NOW)
    assert _count(db) == 0
    report = dispatch_tick(db, _no_publish, DispatchOptions(deployment_id=done[-1]), now=NOW)
    assert report.created == 1


def test_an_activation_waits_for_a_claim_in_flight_and_stops_the_next_one(
    db: sessionmaker[Session], engine: Any
) -> None:
    with db.begin() as session:
        activate(session, "v1", force=True)
    activated = threading.Event()

    def activate_v2() -> None:
        with db.begin() as session:
            activate(session, "v2", force=True)
        activated.set()

    with db.begin() as session:
        fence(session, "v1")  # a v1 claim in flight holds the share lock
        thread = threading.Thread(target=activate_v2)
        thread.start()
        deadline = time.monotonic() + 10
        waiting = 0
        while time.monotonic() < deadline and not waiting:
            with engine.connect() as conn:
                waiting = conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND wait_event = 'advisory' AND query LIKE '%pg_advisory_xact_lock(%'"
                )).scalar_one()
            time.sleep(0.05)
        assert waiting == 1
        assert not activated.is_set()
    thread.join(timeout=10)
    assert activated.is_set()
    with pytest.raises(Superseded), db.begin() as session:
        fence(session, "v1")


def test_a_superseded_worker_starts_no_attempt_and_writes_nothing(
    db: sessionmaker[Session], settings: Settings
) -> None:
    trigger_id = _add_due_trigger(db)
    with db.begin() as session:
        invocation_id = session.execute(
            insert(Invocation).values(
                trigger_id=trigger_id, tenant_id="t1", project_id="p1",
                scheduled_for=dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC),
            ).returning(Invocation.id)
        ).scalar_one()
        activate(session, "v2", force=True)
    old = Settings(**{**settings.__dict__, "deployment_id": "v1"})
    with pytest.raises(Superseded):
        run_invocation(db, old, invocation_id, send_task=lambda *a: None)
    with db.begin() as session:
        invocation = session.get_one(Invocation, invocation_id)
    assert (invocation.status, invocation.attempt, invocation.deployment_id) == (
        InvocationStatus.PENDING, 0, None)


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=60,
    )


def test_the_cli_activates_idempotently_and_rejects_a_malformed_id(
    db: sessionmaker[Session],
) -> None:
    first = _cli("deploy", "activate", "3f2c1ab", "--force")
    again = _cli("deploy", "activate", "3f2c1ab")
    assert first.returncode == again.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"deployment_id": "3f2c1ab", "generation": 1,
                                        "changed": True}
    assert json.loads(again.stdout) == {"deployment_id": "3f2c1ab", "generation": 1,
                                        "changed": False}
    bad = _cli("deploy", "activate", "no spaces; DROP")
    assert bad.returncode == 2
    assert "DEPLOYMENT_ID" in bad.stderr
    with db.begin() as session:
        assert read_state(session).generation == 1


def test_a_superseded_cli_dispatcher_exits_non_zero_and_commits_nothing(
    db: sessionmaker[Session],
) -> None:
    _add_due_trigger(db)
    with db.begin() as session:
        activate(session, "v2", force=True)
    result = _cli("dispatch", "--once", CRONBEAT_DEPLOYMENT_ID="v1")
    assert result.returncode == 1
    assert "v1 is not the active one (v2 is" in result.stderr
    assert _count(db) == 0


@pytest.mark.parametrize(
    ("active", "generation", "was_activated", "mine", "registered", "role"),
    [
        (None, 0, False, None, 0, ProcessRole.ACTIVE),  # gating off: everybody runs
        (None, 5, True, "v1", 2, ProcessRole.ACTIVE),  # after a reset, too
        ("v1", 1, True, "v1", 0, ProcessRole.ACTIVE),
        ("v1", 1, False, "v2", 1, ProcessRole.STANDBY),  # started after v1's activation
        ("v1", 3, True, "v2", 1, ProcessRole.SUPERSEDED),  # v2 was active, then v1 again
        ("v3", 2, False, "v2", 1, ProcessRole.SUPERSEDED),  # v3 activated after v2 started
        ("v1", 1, False, None, 0, ProcessRole.SUPERSEDED),  # an unversioned box, forced out
        ("v1", 1, False, None, 1, ProcessRole.STANDBY),  # ... restarted after that
    ],
)
def test_a_process_role_follows_the_generation_and_its_deployment_history(
    active: str | None, generation: int, was_activated: bool, mine: str | None,
    registered: int, role: ProcessRole,
) -> None:
    observation = Observation(generation, active, was_activated)
    assert role_of(observation, mine, registered) is role


def test_reset_turns_gating_off_once_and_a_second_reset_changes_nothing(
    db: sessionmaker[Session],
) -> None:
    with db.begin() as session:
        activate(session, "v1", force=True)
    with db.begin() as session:
        first = deploy.reset(session)
    with db.begin() as session:
        second = deploy.reset(session)
    assert (first.generation, first.deployment_id, first.changed) == (2, None, True)
    assert (second.generation, second.changed) == (2, False)
    report = dispatch_tick(db, _no_publish, DispatchOptions(deployment_id="anything"), now=NOW)
    assert report.claimed == 0
    with db.begin() as session:
        assert deploy.observe(session, "v1") == Observation(2, None, True)
        assert deploy.observe(session, "v9") == Observation(2, None, False)


def test_a_refused_activation_writes_nothing_and_a_forced_one_is_recorded(
    db: sessionmaker[Session],
) -> None:
    register(db, "v1", ProcessKind.WORKER, (processes.RUN_QUEUE,))
    register(db, "v1", ProcessKind.DISPATCHER, (processes.DISPATCH_QUEUE,))
    with db.begin() as session:
        assert activate(session, "v1").changed
    with pytest.raises(ActivationRefused, match="deployment typo has no live worker"), \
            db.begin() as session:
        activate(session, "typo")
    with db.begin() as session:
        assert read_state(session).active_deployment_id == "v1"
        assert deploy.observe(session, "typo").was_activated is False
        activate(session, "typo", force=True)
    with db.begin() as session:
        assert deploy.observe(session, "typo") == Observation(2, "typo", True)


STATUS_TEXT = """\
active deployment: v2 (generation 2)
deployment v2: active, last activated <T2>
  beat        host-a pid 12  active      seen 5 s ago
  dispatcher  host-a pid 13  active      consuming cronbeat.dispatch  seen 5 s ago
  worker      host-b pid 11  active      consuming nothing  seen 5 s ago  PROBLEM: its \
deployment is active but it has consumed none of cronbeat.runs for 12 s
deployment v1: superseded, last activated <T1>
  worker      host-a pid 21  superseded  consuming nothing  seen 5 s ago
deployment v3: standby
  worker      host-c pid 31  standby     consuming nothing  seen 5 s ago"""


def test_deploy_status_prints_the_active_deployment_and_each_deployment_s_processes(
    db: sessionmaker[Session],
) -> None:
    empty = _cli("deploy", "status")
    assert (empty.returncode, empty.stdout) == (
        0, "active deployment: none (gating is off: every process runs; generation 0)\n")
    active = {"role": ProcessRole.ACTIVE, "seen_s_ago": 5}
    register(db, "v2", ProcessKind.WORKER, (processes.RUN_QUEUE,), consuming=False,
             problem="its deployment is active but it has consumed none of cronbeat.runs "
                     "for 12 s", hostname="host-b", pid=11, **active)
    register(db, "v2", ProcessKind.BEAT, pid=12, **active)
    register(db, "v2", ProcessKind.DISPATCHER, (processes.DISPATCH_QUEUE,), consuming=True,
             pid=13, **active)
    register(db, "v1", ProcessKind.WORKER, (processes.RUN_QUEUE,), consuming=False,
             role=ProcessRole.SUPERSEDED, pid=21, seen_s_ago=5)
    register(db, "v1", ProcessKind.BEAT, pid=22, seen_s_ago=31)  # dead: left out
    register(db, "v3", ProcessKind.WORKER, (processes.RUN_QUEUE,), consuming=False,
             hostname="host-c", pid=31, seen_s_ago=5)
    with db.begin() as session:
        activate(session, "v1", force=True)
    with db.begin() as session:
        activate(session, "v2")
    with db.begin() as session:
        when = dict(session.execute(select(Deployment.deployment_id,
                                           Deployment.last_activated_at)).all())
    result = _cli("deploy", "status")
    assert result.returncode == 0, result.stderr
    expected = STATUS_TEXT
    for name, key in (("<T1>", "v1"), ("<T2>", "v2")):
        instant = when[key].astimezone(UTC).isoformat(timespec="seconds")
        expected = expected.replace(name, instant.replace("+00:00", "Z"))
    # The ages grow while the CLI starts: compare them apart from the rest.
    ages = [int(age) for age in re.findall(r"seen (\d+) s ago", result.stdout)]
    assert len(ages) == 5 and all(5 <= age <= 20 for age in ages), ages
    assert re.sub(r"seen \d+ s ago", "seen 5 s ago", result.stdout) == expected + "\n"
    as_json = json.loads(_cli("deploy", "status", "--json").stdout)
    assert [(g["deployment_id"], g["standing"], [p["pid"] for p in g["processes"]])
            for g in as_json["deployments"]] == [
        ("v2", "active", [12, 13, 11]), ("v1", "superseded", [21]), ("v3", "standby", [31])]


def test_health_fails_on_a_reported_problem_and_names_it(db: sessionmaker[Session]) -> None:
    host = socket.gethostname()
    register(db, None, ProcessKind.WORKER, (processes.RUN_QUEUE,), role=ProcessRole.ACTIVE,
             consuming=False, problem="the worker's event loop has not run for 45 s",
             hostname=host, pid=77)
    register(db, None, ProcessKind.DISPATCHER, (processes.DISPATCH_QUEUE,),
             role=ProcessRole.ACTIVE, consuming=True, hostname=host, pid=78)
    sick = _cli("health", "worker")
    assert sick.returncode == 1
    assert sick.stderr.startswith("unhealthy  deployment (unversioned)  worker")
    assert sick.stderr.rstrip().endswith("PROBLEM: the worker's event loop has not run for 45 s")
    fine = _cli("health", "dispatcher")
    assert fine.returncode == 0, fine.stderr
    assert fine.stdout.startswith("healthy  deployment (unversioned)  dispatcher")
    assert _cli("health", "beat").returncode == 1
    assert _cli("health", "nonsense").returncode == 2
