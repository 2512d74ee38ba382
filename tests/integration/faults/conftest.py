"""Fixtures of the fault tests: servers of their own to kill, and the Procfile's processes.

* ``redis_server``: a redis-server of the test's own (no persistence), started.
* ``private_pg``: a PostgreSQL server of the module's own, migrated; ``pg_db`` a session
  factory on it, emptied before each test.
* ``fleet(names, redis, database_url=None, **env)``: the Procfile's lines ``names``
  started on those servers (the run's database by default), stopped after the test.
* ``channel_receiver``: a second webhook receiver, for alert channels.
* Plain functions: ``one_time(db, url, run_at, count, **values)``, one-time triggers due
  at ``run_at`` in ten tenants; ``watch_tenants(db, receiver)``, an alert channel on each
  of those tenants' project; ``statuses(db)``, the invocations' statuses counted.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import create_database, make_session_factory
from app.enums import InvocationStatus
from app.models import AlertChannel, Invocation, Trigger
from tests.conftest import alembic_config, empty_database
from tests.support.fleet import PrivatePostgres, PrivateRedis, ProcfileProcess
from tests.support.receiver import Receiver, running_receiver
from tests.support.runs import new_secret
from tests.support.worker import ROOT

__all__ = ["ROOT", "db_now", "one_time", "statuses", "watch_tenants"]


@pytest.fixture
def channel_receiver() -> Iterator[Receiver]:
    yield from running_receiver()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    # Outside pytest's basetemp: run as root, pgserver runs PostgreSQL as its own user
    # and opens the folder's parents to it (see tests/integration/test_make_run.py).
    parent = Path(tempfile.mkdtemp(prefix="cronbeat-faults-pg-")).resolve()
    server = PrivatePostgres(parent / "pg")
    try:
        create_database(server.admin_url, "cronbeat")
        command.upgrade(alembic_config(server.url("cronbeat")), "head")
        yield server
    finally:
        server.stop()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def pg_db(private_pg: PrivatePostgres) -> Iterator[sessionmaker[Session]]:
    from sqlalchemy import create_engine

    engine = create_engine(private_pg.url("cronbeat"), pool_pre_ping=True)
    empty_database(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Callable[..., dict[str, ProcfileProcess]]]:
    started: list[ProcfileProcess] = []

    def start(names: tuple[str, ...], redis: PrivateRedis, database_url: str | None = None,
              **env: str) -> dict[str, ProcfileProcess]:
        data = tmp_path / f"data-{len(started)}"
        data.mkdir()
        values = {"REDIS_URL": redis.url, "CRONBEAT_TICK_SECONDS": "1",
                  "CRONBEAT_REPUBLISH_AFTER_S": "5", "CRONBEAT_ALLOW_PRIVATE_TARGETS": "true",
                  "CRONBEAT_DATA_DIR": str(data), **env}
        if database_url is not None:
            values["DATABASE_URL"] = database_url
        processes = {}
        for name in names:
            process = ProcfileProcess(name, tmp_path / f"logs-{len(started)}", values)
            started.append(process)
            process.start()
            processes[name] = process
        for name in ("worker", "dispatcher"):
            if name in processes:
                processes[name].wait_for_log(" ready.")
        return processes

    yield start
    for process in started:
        process.stop()


def db_now(db: sessionmaker[Session]) -> dt.datetime:
    with db.begin() as session:
        return session.execute(select(func.now())).scalar_one()


def one_time(db: sessionmaker[Session], url: str, run_at: dt.datetime, count: int,
             **values: Any) -> list[uuid.UUID]:
    """``count`` one-time webhook triggers due at ``run_at``, in ten tenants."""
    rows = [{"tenant_id": f"t{n % 10}", "project_id": "p1",
             "name": f"once-{uuid.uuid4().hex[:10]}", "run_at": run_at,
             "next_run_at": run_at, "target_kind": "webhook", "webhook_url": url,
             "timeout_s": 10, "max_attempts": 3, "backoff_base_s": 1, "backoff_cap_s": 1,
             **values} for n in range(count)]
    with db.begin() as session:
        return list(session.execute(insert(Trigger).returning(Trigger.id), rows).scalars())


def watch_tenants(db: sessionmaker[Session], receiver: Receiver) -> None:
    """An alert channel (to ``receiver``) on the project of each tenant one_time uses."""
    with db.begin() as session:
        session.execute(insert(AlertChannel), [
            {"tenant_id": f"t{n}", "project_id": "p1", "name": "ops",
             "url": receiver.url("/alerts"), "signing_secret": new_secret()}
            for n in range(10)])


def statuses(db: sessionmaker[Session]) -> Counter[InvocationStatus]:
    """How many invocations are in each status."""
    with db.begin() as session:
        return Counter(session.execute(select(Invocation.status)).scalars())
