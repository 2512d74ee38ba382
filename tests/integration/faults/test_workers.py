"""Workers that die, workers under a burst, and workers that booted as standbys."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from celery import Celery
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.enums import InvocationStatus
from app.models import AlertChannel, Invocation
from messaging.config import configure
from messaging.publisher import publish_runs
from tests.integration.faults.conftest import ROOT, db_now, one_time
from tests.support.fleet import PrivateRedis, ProcfileProcess, wait_until
from tests.support.receiver import Receiver, Reply, running_receiver
from tests.support.runs import T0, add_trigger, new_secret

pytestmark = pytest.mark.slow

#: The connections one worker process may hold (README: CRONBEAT_WORKER_DB_POOL + 2).
WORKER_CONNECTIONS = 8 + 2


@pytest.fixture
def channel_receiver() -> Iterator[Receiver]:
    yield from running_receiver()


def _statuses(db: sessionmaker[Session], tenant_id: str) -> Counter[InvocationStatus]:
    with db.begin() as session:
        return Counter(session.execute(select(Invocation.status).where(
            Invocation.tenant_id == tenant_id)).scalars())


def test_a_killed_worker_s_runs_free_their_tenant_within_45_s(
    db: sessionmaker[Session], receiver: Receiver, redis_server: PrivateRedis,
    fleet: Callable[..., dict[str, ProcfileProcess]],
) -> None:
    capped = {"CRONBEAT_TENANT_MAX_RUNNING": "32"}
    first = fleet(("worker", "dispatcher", "beat"), redis_server, **capped)["worker"]
    hold = threading.Event()
    receiver.script(*[Reply(hold=hold)] * 32)
    # The tenant's optional hard cap, 32: the first worker holds it all.
    one_time(db, receiver.url("/held"), db_now(db) + dt.timedelta(seconds=1), 32,
             tenant_id="capped", max_attempts=1, timeout_s=300)
    receiver.wait_for(32, timeout_s=60)
    second = fleet(("worker",), redis_server, **capped)["worker"]
    first.kill()
    killed_at = time.monotonic()
    hold.set()
    one_time(db, receiver.url("/next"), db_now(db) + dt.timedelta(seconds=1), 5,
             tenant_id="capped")

    wait_until(lambda: sum(r.path == "/next" for r in receiver.requests) == 5,
               "the tenant's next runs", 60)
    started_after_kill_s = time.monotonic() - killed_at
    assert started_after_kill_s < 45, started_after_kill_s
    wait_until(lambda: _statuses(db, "capped") == {InvocationStatus.FAILED: 32,
                                                   InvocationStatus.SUCCEEDED: 5},
               "the dead worker's runs failed, the next ones succeeded", 30)
    with db.begin() as session:
        errors = set(session.execute(select(Invocation.last_error).where(
            Invocation.status == InvocationStatus.FAILED)).scalars())
    assert errors == {"worker lost: its process stopped while the attempt ran"}
    assert "reaper: took back 32 runs of dead workers" in second.log_text()
    # Each held run was delivered once (by the dead worker), never again.
    assert Counter(r.path for r in receiver.requests) == {"/held": 32, "/next": 5}


def test_one_worker_under_a_burst_holds_at_most_its_connection_budget(
    db: sessionmaker[Session], receiver: Receiver, redis_server: PrivateRedis,
    fleet: Callable[..., dict[str, ProcfileProcess]], settings: Settings,
) -> None:
    worker = fleet(("worker",), redis_server)["worker"]
    receiver.default = Reply(delay_s=0.05)
    # Twenty tenants of 100 runs each: every run goes out as a message.
    triggers = [add_trigger(db, receiver, tenant_id=f"burst{n}", max_attempts=1)
                for n in range(20)]
    with db.begin() as session:
        keys = [(row.id, row.scheduled_for) for row in session.execute(
            insert(Invocation).returning(Invocation.id, Invocation.scheduled_for), [
                {"trigger_id": triggers[n % 20], "tenant_id": f"burst{n % 20}",
                 "project_id": "p1", "scheduled_for": T0 + dt.timedelta(seconds=n)}
                for n in range(2000)])]
    # Half with their day (claimed in batches by the engine's thread), half by id alone
    # (each claimed and finished on its own delivery thread): 256 threads that all
    # want the database at once, sharing the worker's budget.
    app = configure(Celery("burst"), dataclasses.replace(
        settings, redis_url=redis_server.url))
    publish_runs(app, [*keys[:1000], *(invocation_id for invocation_id, _ in keys[1000:])])
    # Autocommit: pg_stat_activity is read once per transaction (a cached snapshot).
    engine = create_engine(db.kw["bind"].url, isolation_level="AUTOCOMMIT")
    counts = []
    try:
        with engine.connect() as conn:
            while receiver.count < 2000:
                counts.append(conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
                    {"name": f"cronbeat[{worker.pid}]"}).scalar_one())
                time.sleep(0.02)
                assert len(counts) < 6000, "the burst took over two minutes"
    finally:
        engine.dispose()
    assert max(counts) <= WORKER_CONNECTIONS, Counter(counts)
    assert max(counts) >= 8  # its pool was in full use (and its presence's connection)
    wait_until(lambda: sum(_statuses(db, f"burst{n}")[InvocationStatus.SUCCEEDED]
                           for n in range(20)) == 2000, "the burst recorded", 60)


def test_a_worker_that_booted_as_a_standby_runs_the_watchdog_once_activated(
    db: sessionmaker[Session], receiver: Receiver, channel_receiver: Receiver,
    redis_server: PrivateRedis, fleet: Callable[..., dict[str, ProcfileProcess]],
) -> None:
    env = {**os.environ, "CRONBEAT_ALLOW_PRIVATE_TARGETS": "true"}
    assert subprocess.run([sys.executable, "-m", "cli", "deploy", "activate", "v1",
                           "--force"], cwd=ROOT, env=env, capture_output=True,
                          timeout=60).returncode == 0
    watch_s = 2
    v2 = fleet(("worker", "dispatcher", "beat"), redis_server, CRONBEAT_DEPLOYMENT_ID="v2",
               CRONBEAT_ALERT_WATCH_INTERVAL_S=str(watch_s))
    v2["worker"].wait_for_log("standby: deployment v2 is not activated")
    activated = subprocess.run([sys.executable, "-m", "cli", "deploy", "activate", "v2"],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert activated.returncode == 0, activated.stderr
    v2["worker"].wait_for_log("deployment v2 is the active one")
    v2["beat"].stop()
    v2["dispatcher"].stop()
    with db.begin() as session:
        session.execute(insert(AlertChannel).values(
            tenant_id="t0", project_id="p1", name="ops", url=channel_receiver.url("/alerts"),
            signing_secret=new_secret()))
    due = db_now(db) + dt.timedelta(seconds=1)
    # The grace is the dispatcher's minimum here: one tick (1 s) plus 30 s.
    trigger, = one_time(db, receiver.url(), due, 1, misfire_grace_s=0)

    channel_receiver.wait_for(1, timeout_s=31 + watch_s + 15 + 5)
    with db.begin() as session:
        late_s = (session.execute(select(text("now()"))).scalar_one() - due).total_seconds()
    assert late_s <= 31 + watch_s + 15, late_s
    alert = json.loads(channel_receiver.requests[0].body)
    assert (alert["type"], alert["trigger"]["id"]) == ("trigger.didnt_run", str(trigger))
    assert receiver.count == 0  # nobody dispatched it: no beat, no dispatcher
