"""Claims are fair across tenants: a tenant with many due triggers does not go first."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import redis
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from app.firing.dispatch import DispatchOptions, dispatch_tick
from app.models import Invocation
from app.queries import claims
from messaging.publisher import publish_runs
from tasks.celery_app import RUN_QUEUE, celery_app

NOW = dt.datetime(2026, 6, 1, 12, 0, 20, tzinfo=dt.UTC)


def seed(db: sessionmaker[Session], tenant: str, count: int, due: dt.datetime) -> None:
    with db.begin() as session:
        session.execute(
            text(
                "INSERT INTO triggers (tenant_id, project_id, name, cron_expression,"
                " next_run_at, target_kind, webhook_url)"
                " SELECT :tenant, 'p1', :tenant || '-' || g, '0 12 * * *', :due, 'webhook',"
                " 'https://example.com/hook' FROM generate_series(1, :n) AS g"
            ),
            {"tenant": tenant, "due": due, "n": count},
        )


def test_a_batch_takes_each_tenant_s_oldest_due_trigger_first(
    db: sessionmaker[Session],
) -> None:
    # Tenant A's 300 became due before tenant B's 2; B still gets into the first batch.
    seed(db, "tenant-a", 300, NOW.replace(second=0) - dt.timedelta(hours=1))
    seed(db, "tenant-b", 2, NOW.replace(second=0))
    with db.begin() as session:
        rows = claims.claim_due_triggers(session, NOW, limit=10)
    assert [row.tenant_id for row in rows] == (
        ["tenant-a", "tenant-b", "tenant-a", "tenant-b"] + ["tenant-a"] * 6)



def test_a_tick_publishes_the_other_tenant_s_run_within_the_first_batch(
    db: sessionmaker[Session], broker: redis.Redis
) -> None:
    seed(db, "tenant-a", 1000, NOW.replace(second=0) - dt.timedelta(hours=1))
    seed(db, "tenant-b", 1, NOW.replace(second=0))

    def publish(ids: Sequence[uuid.UUID]) -> int:
        return publish_runs(celery_app, ids)

    report = dispatch_tick(db, publish, DispatchOptions(batch_size=100), now=NOW)
    assert (report.created, report.batches) == (1001, 11)
    with db.begin() as session:
        b_run = session.execute(
            select(Invocation.id).where(Invocation.tenant_id == "tenant-b")).scalar_one()
        assert session.scalar(select(func.count()).select_from(Invocation)) == 1001
    # The queue is first in, first out (consumers take from the right): B's message is
    # among the first batch's 100, not behind A's thousand.
    oldest_first = [m for m in reversed(broker.lrange(RUN_QUEUE, 0, -1))]
    position = next(i for i, m in enumerate(oldest_first) if str(b_run).encode() in m)
    assert position < 100
