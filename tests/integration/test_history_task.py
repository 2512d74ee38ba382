"""The history's maintenance as beat sends it: the task on a real worker's dispatch queue."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable

from celery import Celery
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.history import partitions
from app.models import HistoryState, Invocation, TriggerDayStats
from messaging.config import DISPATCH_QUEUE, HISTORY_TASK
from tests.support.worker import WorkerProcess

DEADLINE_S = 30.0


def test_the_task_drops_a_day_past_the_worker_s_retention_after_rolling_it_up(
    db: sessionmaker[Session], engine: Engine, celery_client: Celery,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    with engine.begin() as conn:
        today = conn.execute(select(func.now())).scalar_one().astimezone(dt.UTC).date()
    expired = today - dt.timedelta(days=8)
    trigger_id = uuid.uuid4()
    with engine.begin() as conn:
        if expired not in partitions.existing_days(conn):
            assert partitions.add_day(conn, expired)
        conn.execute(insert(Invocation).values(
            trigger_id=trigger_id, tenant_id="t1", project_id="p1", status="missed",
            scheduled_for=partitions.day_start(expired) + dt.timedelta(hours=1)))
    worker = start_worker(queues=DISPATCH_QUEUE, CRONBEAT_HISTORY_RETENTION_DAYS="7")
    celery_client.send_task(HISTORY_TASK, queue=DISPATCH_QUEUE)

    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        with db.begin() as session:
            if session.execute(select(HistoryState.last_run_at)).scalar() is not None:
                break
        time.sleep(0.1)
    worker.wait_for_log("cronbeat.maintain_history")
    with engine.connect() as conn:
        days = partitions.existing_days(conn)
        rollup = conn.execute(select(TriggerDayStats.day, TriggerDayStats.missed).where(
            TriggerDayStats.trigger_id == trigger_id)).all()
        state = conn.execute(select(HistoryState.rows_dropped,
                                    HistoryState.partitions_dropped)).one()
    assert expired not in days
    assert {today + dt.timedelta(days=n) for n in range(-1, partitions.AHEAD_DAYS + 1)} <= set(
        days)
    assert [tuple(r) for r in rollup] == [(expired, 1)]
    assert tuple(state) == (1, 1)
