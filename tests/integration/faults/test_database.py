"""PostgreSQL goes away under load: the Procfile's worker, dispatcher and beat on a
PostgreSQL server of their own, stopped ``-m immediate`` (every backend gone at once, as
in a crash) while runs are in flight, and started again."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.enums import InvocationStatus
from app.models import Alert, Invocation
from tests.integration.faults.conftest import db_now, one_time, statuses, watch_tenants
from tests.support.fleet import PrivatePostgres, PrivateRedis, ProcfileProcess, wait_until
from tests.support.receiver import Receiver, Reply

pytestmark = pytest.mark.slow

#: Runs per wave, due at once: more than a tick sends as messages (TICK_MESSAGES, 500),
#: so 200 of each wave are parked and taken from the database by the worker, across
#: the outages too.
WAVE = 700


def _outage(server: PrivatePostgres, down_s: float) -> None:
    server.stop_immediate()
    time.sleep(down_s)
    server.start()


def test_outages_of_10_and_20_s_record_no_delivered_run_as_failed(
    pg_db: sessionmaker[Session], private_pg: PrivatePostgres, receiver: Receiver,
    channel_receiver: Receiver, redis_server: PrivateRedis,
    fleet: Callable[..., dict[str, ProcfileProcess]],
) -> None:
    processes = fleet(("worker", "dispatcher", "beat"), redis_server,
                      private_pg.url("cronbeat"))
    watch_tenants(pg_db, channel_receiver)
    # Each delivery takes a second, and a run gets one attempt: a delivered run whose
    # outcome were lost would be taken back and recorded failed, raising an alert.
    receiver.default = Reply(delay_s=1.0)
    one_time(pg_db, receiver.url(), db_now(pg_db) + dt.timedelta(seconds=2), WAVE,
             max_attempts=1, timeout_s=30)
    receiver.wait_for(50, timeout_s=60)
    _outage(private_pg, 10.0)
    one_time(pg_db, receiver.url(), db_now(pg_db) + dt.timedelta(seconds=2), WAVE,
             max_attempts=1, timeout_s=30)
    wait_until(lambda: statuses(pg_db)[InvocationStatus.SUCCEEDED] >= WAVE + 50,
               "the second wave under way", 90)
    _outage(private_pg, 20.0)

    wait_until(lambda: statuses(pg_db) == {InvocationStatus.SUCCEEDED: 2 * WAVE},
               "every run succeeded", 180, every_s=0.5)
    deliveries = Counter(r.headers["webhook-id"] for r in receiver.requests)
    with pg_db.begin() as session:
        ids = set(session.execute(select(Invocation.id)).scalars())
        alerts = session.execute(select(func.count()).select_from(Alert)).scalar_one()
    assert {uuid.UUID(key) for key in deliveries} == ids
    assert set(deliveries.values()) == {1}
    assert alerts == 0 and channel_receiver.count == 0
    for name, process in processes.items():
        assert process.alive, f"{name}:\n{process.log_text()[-3000:]}"
    worker_log = processes["worker"].log_text()
    assert "recording the outcome failed, trying again until its lease ends" in worker_log
