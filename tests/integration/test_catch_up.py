"""A scheduler down for a day catches up in bounded batches, with every occurrence counted.

5,000 minutely triggers, 24 hours without a tick: each trigger's 1,441 due occurrences
become one run (run_once) and missed rows folded by occurrences.fold_missed, written in
batches of at most dispatch.MAX_ROWS_PER_BATCH rows.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence

import pytest
import redis
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.firing import dispatch
from app.firing.dispatch import DispatchOptions, dispatch_tick
from app.firing.fairness import TICK_MESSAGES
from app.models import Invocation
from app.queries import claims
from app.schedule.occurrences import MAX_MISSED_ROWS
from messaging.publisher import publish_runs
from tasks.celery_app import RUN_QUEUE, celery_app, configure

pytestmark = pytest.mark.slow

TRIGGERS = 5000
NOW = dt.datetime(2026, 6, 2, 12, 0, 20, tzinfo=dt.UTC)
BOUNDARY = NOW.replace(second=0)
DOWN_SINCE = BOUNDARY - dt.timedelta(hours=24)
DUE_EACH = 24 * 60 + 1


def test_a_day_long_outage_of_5000_minutely_triggers_recovers_in_bounded_batches(
    db: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(celery_app, settings)
    broker = redis.Redis.from_url(settings.redis_url)
    broker.delete(RUN_QUEUE)
    with db.begin() as session:
        session.execute(
            text(
                "INSERT INTO triggers (tenant_id, project_id, name, cron_expression,"
                " next_run_at, misfire_grace_s, target_kind, webhook_url)"
                " SELECT 't1', 'p1', 'minutely-' || g, '* * * * *', :since, 30, 'webhook',"
                " 'https://example.com/hook' FROM generate_series(1, :n) AS g"
            ),
            {"since": DOWN_SINCE, "n": TRIGGERS},
        )
    written: list[int] = []
    insert = claims.insert_invocations

    def counting_insert(session: Session, **kwargs: Sequence[object]) -> object:
        written.append(len(kwargs["trigger_ids"]))
        return insert(session, **kwargs)

    monkeypatch.setattr(claims, "insert_invocations", counting_insert)

    def publish(ids: Sequence[uuid.UUID]) -> int:
        return publish_runs(celery_app, ids)

    try:
        report = dispatch_tick(db, publish, DispatchOptions(batch_size=5000), now=NOW)

        assert max(written) <= dispatch.MAX_ROWS_PER_BATCH
        # Per trigger: the first claim's 1,000 occurrences fold into one row; the second
        # claim's 441 are the latest run, 100 missed rows and one row for the other 340.
        # One tenant: one batch of its runs goes out as messages, the rest are parked
        # for the workers to take from the database (app.firing.fairness).
        assert (report.created, report.published, report.parked) == (
            TRIGGERS, TICK_MESSAGES, TRIGGERS - TICK_MESSAGES)
        assert report.missed == TRIGGERS * (1 + MAX_MISSED_ROWS + 1)
        assert broker.llen(RUN_QUEUE) == TICK_MESSAGES
        with db.begin() as session:
            counts = dict(session.execute(
                select(Invocation.status, func.count()).group_by(Invocation.status)).all())
            summaries = session.execute(
                select(Invocation.last_error)
                .where(Invocation.last_error.like("%this row stands for%"))
            ).scalars().all()
            left_due = session.execute(text(
                "SELECT count(*) FROM triggers WHERE next_run_at <= :now"), {"now": NOW}
            ).scalar_one()
        assert {status.value: n for status, n in counts.items()} == {
            "pending": TRIGGERS, "missed": TRIGGERS * (MAX_MISSED_ROWS + 2)}
        # Every one of the 1,440 missed occurrences per trigger is accounted for.
        folded = sum(int(re.search(r"stands for (\d+)", e).group(1)) for e in summaries)
        assert folded + TRIGGERS * MAX_MISSED_ROWS == TRIGGERS * (DUE_EACH - 1)
        assert left_due == 0
    finally:
        broker.delete(RUN_QUEUE)
        broker.close()
