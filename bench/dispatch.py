"""Dispatcher benchmark (not a test): N due triggers among 1,000,000.

Prints, for N = 10,000 and 100,000, the time from tick start until the last run_trigger
message is in Redis, the cost of a tick with nothing due, and the batch publisher
against Celery's apply_async loop, all measured in this one run.

    make bench            # or: .venv/bin/python -m bench.dispatch [--total 1000000]

It uses its own database (cronbeat_bench) on the server of BENCH_PG_ADMIN_URL (default:
postgres on 127.0.0.1:5432) and Redis db 15 of BENCH_REDIS_URL (default 127.0.0.1:6379).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

import redis
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from app.config import Settings
from app.db import create_database, drop_database, make_engine, make_session_factory
from app.firing.dispatch import DispatchOptions, dispatch_tick
from messaging.publisher import publish_runs
from tasks.celery_app import RUN_QUEUE, RUN_TASK, celery_app, configure

DB_NAME = "cronbeat_bench"


def seed(engine, total: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE invocation_attempts, invocations, triggers CASCADE"))
        # Enabled cron triggers, due at some whole minute within the next 30 days: all of
        # them sit in the partial due index, none is due now.
        conn.execute(
            text(
                "INSERT INTO triggers (tenant_id, project_id, name, cron_expression,"
                " next_run_at, target_kind, webhook_url)"
                " SELECT 't' || (g % 100), 'p1', 'bench-' || g, '* * * * *',"
                " date_trunc('minute', now()) + interval '1 hour'"
                "   + (g % 43200) * interval '1 minute', 'webhook', 'https://example.com/h'"
                " FROM generate_series(1, :n) AS g"
            ),
            {"n": total},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE triggers"))


def make_due(engine, count: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM invocations"))
        conn.execute(
            text(
                # Due once, now: one occurrence each (every trigger's schedule matches
                # every minute), none of them late.
                "UPDATE triggers SET next_run_at = date_trunc('minute', now())"
                " WHERE id IN (SELECT id FROM triggers ORDER BY name LIMIT :n)"
            ),
            {"n": count},
        )
        # The rest back in the future, in case an earlier round advanced them.
        conn.execute(
            text(
                "UPDATE triggers SET next_run_at = date_trunc('minute', now())"
                " + interval '1 hour' WHERE next_run_at <= now()"
                " AND id NOT IN (SELECT id FROM triggers ORDER BY name LIMIT :n)"
            ),
            {"n": count},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE triggers, invocations"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, nargs="*", default=[10_000, 100_000])
    args = parser.parse_args()

    admin = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    drop_database(admin, DB_NAME)
    create_database(admin, DB_NAME)
    url = admin.rsplit("/", 1)[0] + "/" + DB_NAME
    try:
        config = Config("alembic.ini")
        config.set_main_option("sqlalchemy.url", url)
        command.upgrade(config, "head")
        settings = Settings.from_env({"DATABASE_URL": url, "REDIS_URL": redis_url})
        configure(celery_app, settings)
        engine = make_engine(settings)
        sessions = make_session_factory(engine)
        broker = redis.Redis.from_url(redis_url)
        options = DispatchOptions(batch_size=settings.dispatch_batch_size)

        def publish(ids):
            return publish_runs(celery_app, ids)

        def idle_tick_ms() -> float:
            ticks = []
            for _ in range(20):
                started = time.perf_counter()
                dispatch_tick(sessions, publish, options)
                ticks.append(time.perf_counter() - started)
            return statistics.median(ticks) * 1000

        small = 10_000
        seed(engine, small)
        idle_small = idle_tick_ms()
        started = time.perf_counter()
        seed(engine, args.total)
        print(f"seeded {args.total:,} triggers in {time.perf_counter() - started:.1f} s")
        idle_total = idle_tick_ms()
        print(f"tick with nothing due: median {idle_small:.2f} ms among {small:,} triggers, "
              f"{idle_total:.2f} ms among {args.total:,} (ratio {idle_total / idle_small:.2f} "
              f"for {args.total // small}x the rows)")

        for due in args.due:
            make_due(engine, due)
            broker.delete(RUN_QUEUE)
            started = time.perf_counter()
            report = dispatch_tick(sessions, publish, options)
            elapsed = time.perf_counter() - started
            queued = broker.llen(RUN_QUEUE)
            assert queued == due == report.created, (queued, due, report.as_dict())
            print(
                f"{due:>7,} due among {args.total:,}: last message in Redis after "
                f"{elapsed:.3f} s ({due / elapsed:,.0f} occurrences/s, {report.batches} batches)"
            )
            broker.delete(RUN_QUEUE)

        ids = [uuid.uuid4() for _ in range(10_000)]
        started = time.perf_counter()
        publish_runs(celery_app, ids)
        batch_s = time.perf_counter() - started
        broker.delete(RUN_QUEUE)
        started = time.perf_counter()
        for invocation_id in ids:
            celery_app.send_task(RUN_TASK, args=(str(invocation_id),), queue=RUN_QUEUE)
        loop_s = time.perf_counter() - started
        broker.delete(RUN_QUEUE)
        print(f"publishing 10,000 messages: batch {10_000 / batch_s:,.0f}/s, "
              f"send_task loop {10_000 / loop_s:,.0f}/s, ratio {loop_s / batch_s:.1f}x")
        engine.dispose()
    finally:
        drop_database(admin, DB_NAME)


if __name__ == "__main__":
    main()
