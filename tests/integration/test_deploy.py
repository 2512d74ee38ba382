"""Deploy supersession: activation, the fence, and what other deployments' processes may do."""

from __future__ import annotations

import datetime as dt
import json
import os
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
from app.deploy import Superseded, activate, fence, may_run, read_state
from app.dispatch import DispatchOptions, dispatch_tick
from app.enums import InvocationStatus
from app.models import Invocation, Trigger
from app.runner import run_invocation
from tests.conftest import ROOT

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 1, 12, 0, 20, tzinfo=UTC)


def _no_publish(ids: Any) -> int:
    return len(ids)


def _add_due_trigger(db: sessionmaker[Session]) -> uuid.UUID:
    with db.begin() as session:
        return session.execute(
            insert(Trigger)
            .values(
                tenant_id="t1", project_id="p1", name=f"t-{uuid.uuid4().hex[:8]}",
                cron_expression="0 * * * *",
                next_run_at=dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC),
                target_kind="webhook", webhook_url="https://example.com/hook",
            )
            .returning(Trigger.id)
        ).scalar_one()


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
        [sys.executable, "-m", "app.cli", *args], cwd=ROOT, env={**os.environ, **env},
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
