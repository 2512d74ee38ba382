"""History benchmark (not a test): a list page with long histories, and the history's size.

Two projects of one tenant with 50 triggers each: one whose triggers have 10,000
invocations each (minutely, a week of day partitions, an attempt row each), one with
none. Prints, interleaved in one run:

* ``GET /api/v1/projects/{id}/triggers?limit=50`` p50 for both and their ratio (goal:
  <= 1.2x), through the Flask app with a real API key;
* the last-invocation read alone, as the API does it (one LATERAL probe per trigger),
  beside the DISTINCT ON query it replaced, on the same page;
* table and index bytes per 1,000 invocations (attempts included), and what a 10,000
  runs/min installation keeps for CRONBEAT_HISTORY_RETENTION_DAYS=30.

    make bench-history    # or: .venv/bin/python -m bench.history [--per-trigger 10000]

It uses its own database (cronbeat_bench_history) on the server of BENCH_PG_ADMIN_URL
(default: postgres on 127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from collections.abc import Callable

from alembic import command
from alembic.config import Config
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import distinct_on

from api import create_app
from app.config import Settings
from app.db import create_database, drop_database, make_engine, make_session_factory
from app.editing import apikeys
from app.editing.invocations import last_invocations
from app.history import partitions
from app.models import Invocation

DB_NAME = "cronbeat_bench_history"
TRIGGERS = 50
RUNS_PER_MINUTE = 10_000
RETENTION_DAYS = 30


def seed(engine, per_trigger: int, start: dt.datetime) -> None:
    days = {start.date() + dt.timedelta(days=n) for n in range(per_trigger // 1440 + 2)}
    with engine.begin() as conn:
        for day in sorted(days - set(partitions.existing_days(conn))):
            partitions.add_day(conn, day)
        for project in ("with-history", "no-history"):
            conn.execute(text(
                "INSERT INTO triggers (tenant_id, project_id, name, cron_expression,"
                " next_run_at, target_kind, webhook_url) SELECT 'bench', :project,"
                " 'minutely-' || g, '* * * * *', :next, 'webhook', 'https://example.com/h'"
                " FROM generate_series(1, :n) g"),
                {"project": project, "n": TRIGGERS,
                 "next": start + dt.timedelta(minutes=per_trigger)})
        conn.execute(text(
            "INSERT INTO invocations (trigger_id, tenant_id, project_id, scheduled_for,"
            " status, attempt, enqueued_at, started_at, finished_at, deployment_id,"
            " response_status) SELECT t.id, 'bench', t.project_id, m.at, 'succeeded', 1,"
            " m.at, m.at + interval '40 ms', m.at + interval '90 ms', 'deploy-1', 200"
            " FROM triggers t CROSS JOIN LATERAL (SELECT :start + g * interval '1 minute'"
            " AS at FROM generate_series(0, :n - 1) g) m WHERE t.project_id = 'with-history'"),
            {"start": start, "n": per_trigger})
        # As the dispatcher leaves them: the last occurrence it recorded.
        conn.execute(text(
            "UPDATE triggers SET last_scheduled_for = :start + (:n - 1) * interval '1 minute'"
            " WHERE project_id = 'with-history'"), {"start": start, "n": per_trigger})
        conn.execute(text(
            "INSERT INTO invocation_attempts (invocation_id, scheduled_for, number,"
            " deployment_id, started_at, finished_at, outcome, response_status)"
            " SELECT id, scheduled_for, 1, deployment_id, started_at, finished_at,"
            " 'succeeded', 200 FROM invocations"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def sizes(engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT p.relname, sum(pg_relation_size(c.oid)), sum(pg_indexes_size(c.oid))"
            " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent"
            " WHERE p.relname IN ('invocations', 'invocation_attempts') GROUP BY p.relname"
        )).all()
        count = conn.execute(text("SELECT count(*) FROM invocations")).scalar_one()
    result = {"invocations": int(count)}
    for name, table_bytes, index_bytes in rows:
        result[f"{name}_table"] = int(table_bytes)
        result[f"{name}_indexes"] = int(index_bytes)
    return result


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-trigger", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    admin = os.environ.get("BENCH_PG_ADMIN_URL",
                           "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    drop_database(admin, DB_NAME)
    create_database(admin, DB_NAME)
    url = admin.rsplit("/", 1)[0] + "/" + DB_NAME
    try:
        config = Config("alembic.ini")
        config.set_main_option("sqlalchemy.url", url)
        command.upgrade(config, "head")
        settings = Settings.from_env({"DATABASE_URL": url, "REDIS_URL": "redis://127.0.0.1:6379/15"})
        engine = make_engine(settings)
        start = dt.datetime.combine(dt.date.today() - dt.timedelta(days=8), dt.time(),
                                    dt.UTC)
        began = time.perf_counter()
        seed(engine, args.per_trigger, start)
        print(f"seeded {TRIGGERS} x {args.per_trigger:,} invocations (+ an attempt each)"
              f" in {time.perf_counter() - began:.1f} s")
        sessions = make_session_factory(engine)
        with sessions.begin() as session:
            key = apikeys.create_api_key(session, "bench", "bench").key
        client = create_app(settings).test_client()
        headers = {"Authorization": f"Bearer {key}"}

        def page(project: str) -> Callable[[], object]:
            def call() -> object:
                response = client.get(f"/api/v1/projects/{project}/triggers?limit=50",
                                      headers=headers)
                assert response.status_code == 200 and len(response.json["items"]) == 50
                return response
            return call

        with engine.connect() as conn:
            ids = conn.execute(text(
                "SELECT id FROM triggers WHERE project_id = 'with-history' ORDER BY id"
            )).scalars().all()

        def lateral() -> None:
            with sessions.begin() as session:
                assert len(last_invocations(session, "bench", ids)) == TRIGGERS

        def distinct() -> None:
            with sessions.begin() as session:
                rows = session.execute(
                    select(Invocation).where(Invocation.tenant_id == "bench",
                                             Invocation.trigger_id.in_(ids))
                    .ext(distinct_on(Invocation.trigger_id))
                    .order_by(Invocation.trigger_id, Invocation.scheduled_for.desc())
                ).scalars().all()
                assert len(rows) == TRIGGERS

        runs: dict[str, list[float]] = {name: [] for name in (
            "page, 50 triggers x 10,000 invocations", "page, 50 triggers, no history",
            "last invocations: LATERAL probes", "last invocations: DISTINCT ON (before)")}
        calls = [page("with-history"), page("no-history"), lateral, distinct]
        for call in calls:  # warm up caches and the app
            call()
        for _ in range(args.rounds):
            for name, call in zip(runs, calls, strict=True):
                runs[name].append(timed(call))
        p50 = {name: statistics.median(times) for name, times in runs.items()}
        for name, value in p50.items():
            print(f"{name:45s} p50 {value:8.2f} ms")
        names = list(p50)
        print(f"page ratio with / without history: {p50[names[0]] / p50[names[1]]:.2f}x"
              " (goal <= 1.2x)")
        print(f"DISTINCT ON / LATERAL: {p50[names[3]] / p50[names[2]]:.1f}x")

        size = sizes(engine)
        per_k = {name: value * 1000 / size["invocations"] for name, value in size.items()
                 if name != "invocations"}
        for name, value in per_k.items():
            print(f"{name:32s} {value / 1024:8.1f} KiB per 1,000 invocations")
        total_per_k = sum(per_k.values())
        kept = RUNS_PER_MINUTE * 1440 * RETENTION_DAYS
        print(f"total {total_per_k / 1024:.1f} KiB per 1,000 invocations (one attempt each):"
              f" {RUNS_PER_MINUTE:,} runs/min for {RETENTION_DAYS} days = {kept:,} invocations"
              f" = {total_per_k * kept / 1000 / 1024 ** 3:.0f} GiB")
        engine.dispose()
    finally:
        drop_database(admin, DB_NAME)


if __name__ == "__main__":
    main()
