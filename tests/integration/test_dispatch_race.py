"""Several dispatcher processes at once never create or publish an occurrence twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import create_engine, func, select, text

from app.firing.fairness import TICK_MESSAGES
from app.models import Invocation
from tests.conftest import ROOT, Services
from tests.integration.test_dispatch import queued_ids

TRIGGERS = 5000
DISPATCHERS = 3

# The real CLI, one process per dispatcher.
TICK = [sys.executable, "-m", "cli", "dispatch", "--once"]


@pytest.fixture
def race_database(test_services: Services) -> Iterator[str]:
    # A database of its own: the race must see only its own 5,000 triggers.
    yield test_services.url(test_services.new_database())


@pytest.mark.slow
def test_three_dispatchers_racing_over_5000_due_triggers_record_and_publish_each_once(
    race_database: str, test_services: Services
) -> None:
    engine = create_engine(race_database)
    client = redis.Redis.from_url(test_services.redis_url)
    client.delete("cronbeat.runs")
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    # One-time triggers: one occurrence each, however late the racing
                    # processes start (a minutely one would be due again after the next
                    # minute boundary, on a loaded machine). Twenty tenants.
                    "INSERT INTO triggers (tenant_id, project_id, name, run_at,"
                    " next_run_at, target_kind, webhook_url)"
                    " SELECT 't' || (g % 20), 'p1', 'race-' || g, date_trunc('minute', now()),"
                    " date_trunc('minute', now()), 'webhook', 'https://example.com'"
                    " FROM generate_series(1, :n) AS g"
                ),
                {"n": TRIGGERS},
            )
        env = dict(os.environ, DATABASE_URL=race_database, CRONBEAT_DISPATCH_BATCH_SIZE="100")
        processes = [
            subprocess.Popen(TICK, cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(DISPATCHERS)
        ]
        reports = []
        for process in processes:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))

        with engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(Invocation)).scalar_one()
            distinct = conn.execute(
                select(func.count(func.distinct(Invocation.trigger_id)))
            ).scalar_one()
            unpublished = conn.execute(
                select(func.count()).where(Invocation.enqueued_at.is_(None))
            ).scalar_one()
            parked = conn.execute(
                select(func.count()).where(Invocation.parked_at.is_not(None))
            ).scalar_one()
            both = conn.execute(select(func.count()).where(
                Invocation.parked_at.is_not(None), Invocation.enqueued_at.is_not(None))
            ).scalar_one()
        # Each dispatcher's tick sends at most one batch as messages and parks the rest
        # (app.firing.fairness): every run is one or the other, never both.
        assert (total, distinct, both) == (TRIGGERS, TRIGGERS, 0)
        assert unpublished == parked == sum(r["parked"] for r in reports)
        assert sum(r["created"] for r in reports) == TRIGGERS
        assert sum(r["claimed"] for r in reports) == TRIGGERS
        assert all(r["published"] <= TICK_MESSAGES for r in reports)
        assert sum(r["published"] for r in reports) == TRIGGERS - parked
        assert set(reports[0]) == {"now", "claimed", "created", "parked", "held", "missed",
                                   "published",
                                   "republished", "retries", "leases_expired", "swept",
                                   "batches", "duration_ms"}
        published = Counter(queued_ids(client))
        assert len(published) == TRIGGERS - parked
        assert set(published.values()) == {1}
    finally:
        client.delete("cronbeat.runs")
        client.close()
        engine.dispose()
