"""The database itself enforces the invariants, and the due query reads only its index."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, insert, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app import limits
from app.models import Invocation, Trigger

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 7, 5, 0, tzinfo=UTC)


def _trigger(**overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "tenant_id": "t1",
        "project_id": "p1",
        "name": f"trigger-{uuid.uuid4().hex[:8]}",
        "cron_expression": "*/5 * * * *",
        "next_run_at": T0,
        "target_kind": "webhook",
        "webhook_url": "https://example.com/hook",
    }
    values.update(overrides)
    return values


@pytest.mark.parametrize(
    ("overrides", "constraint"),
    [
        ({"run_at": T0}, "ck_triggers_exactly_one_schedule"),
        ({"cron_expression": None}, "ck_triggers_exactly_one_schedule"),
        ({"webhook_url": None}, "ck_triggers_target_complete"),
        ({"target_kind": "task"}, "ck_triggers_target_complete"),
        ({"next_run_at": None}, "ck_triggers_enabled_has_next_run"),
        ({"max_attempts": 0}, "ck_triggers_max_attempts_range"),
        ({"timeout_s": 0}, "ck_triggers_timeout_range"),
        ({"backoff_base_s": 10, "backoff_cap_s": 5}, "ck_triggers_backoff_range"),
    ],
)
def test_a_trigger_breaking_an_invariant_is_refused_by_the_database(
    db: sessionmaker[Session], overrides: dict[str, object], constraint: str
) -> None:
    with pytest.raises(IntegrityError, match=constraint), db.begin() as session:
        session.execute(insert(Trigger).values(**_trigger(**overrides)))


def test_a_name_is_unique_within_a_tenant_and_project_only(db: sessionmaker[Session]) -> None:
    with db.begin() as session:
        session.execute(insert(Trigger).values(**_trigger(name="nightly")))
        session.execute(insert(Trigger).values(**_trigger(name="nightly", project_id="p2")))
        session.execute(insert(Trigger).values(**_trigger(name="nightly", tenant_id="t2")))
    with pytest.raises(IntegrityError, match="uq_triggers_tenant_id_project_id_name"), \
            db.begin() as session:
        session.execute(insert(Trigger).values(**_trigger(name="nightly")))


def test_one_occurrence_can_have_only_one_invocation(db: sessionmaker[Session]) -> None:
    with db.begin() as session:
        trigger_id = session.execute(
            insert(Trigger).values(**_trigger()).returning(Trigger.id)
        ).scalar_one()
    row = {"trigger_id": trigger_id, "tenant_id": "t1", "project_id": "p1", "scheduled_for": T0}
    with db.begin() as session:
        session.execute(insert(Invocation).values(**row))
    # The partition's copy of uq_invocations_trigger_id_scheduled_for refuses it.
    with pytest.raises(IntegrityError, match="trigger_id_scheduled_for_key"), \
            db.begin() as session:
        session.execute(insert(Invocation).values(**row))


def test_the_due_query_is_served_by_the_partial_index(db: sessionmaker[Session],
                                                      engine: Engine) -> None:
    # Enough idle rows that a sequential scan would be the planner's choice if the
    # partial index did not serve the query.
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO triggers (tenant_id, project_id, name, cron_expression,"
                " next_run_at, enabled, target_kind, webhook_url)"
                " SELECT 't1', 'p1', 'idle-' || g, '0 0 1 1 *', NULL, false, 'webhook',"
                " 'https://example.com' FROM generate_series(1, 20000) AS g"
            )
        )
        conn.execute(
            text(
                "INSERT INTO triggers (tenant_id, project_id, name, cron_expression,"
                " next_run_at, target_kind, webhook_url)"
                " SELECT 't1', 'p1', 'future-' || g, '0 0 1 1 *',"
                " now() + interval '1 day' * g, 'webhook', 'https://example.com'"
                " FROM generate_series(1, 2000) AS g"
            )
        )
        conn.execute(text("ANALYZE triggers"))
        plan = conn.execute(
            text(
                "EXPLAIN (FORMAT JSON) SELECT id FROM triggers"
                " WHERE enabled AND next_run_at IS NOT NULL AND next_run_at <= now()"
                " ORDER BY next_run_at LIMIT 500 FOR UPDATE SKIP LOCKED"
            )
        ).scalar_one()
    nodes = []
    stack = [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", []))
    scans = [n for n in nodes if "Scan" in n["Node Type"]]
    assert [(n["Node Type"], n.get("Index Name")) for n in scans] == [
        ("Index Scan", "ix_triggers_due")
    ]


def _scans(plan: dict) -> list[tuple[str, str | None]]:
    nodes, stack = [], [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", []))
    return [(n["Node Type"], n.get("Index Name")) for n in nodes if "Scan" in n["Node Type"]]


def test_the_sweeps_lost_message_query_is_a_range_scan_of_its_expression_index(
    db: sessionmaker[Session], engine: Engine
) -> None:
    from sqlalchemy.dialects import postgresql

    from app.queries.sweep import stale_pending_query

    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO triggers (id, tenant_id, project_id, name, cron_expression,"
            " next_run_at, target_kind, webhook_url) VALUES ('00000000-0000-0000-0000-"
            "000000000001', 't1', 'p1', 'x', '* * * * *', now(), 'webhook', 'https://e.com')"
        ))
        # Many finished and fresh pending rows, a few stale ones.
        conn.execute(text(
            "INSERT INTO invocations (trigger_id, tenant_id, project_id, scheduled_for,"
            " status, enqueued_at) SELECT '00000000-0000-0000-0000-000000000001', 't1', 'p1',"
            " now() - g * interval '1 second', CASE WHEN g % 10 = 0 THEN 'pending'"
            " ELSE 'succeeded' END, now() - (g % 7) * interval '1 second'"
            " FROM generate_series(1, 20000) AS g"
        ))
        conn.execute(text("ANALYZE invocations"))
        query = stale_pending_query(T0, 100).compile(
            dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
        plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) {query}")).scalar_one()
        # Each day's partition has its copy of the index (migration 0007).
        copies = set(conn.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'ix_invocations_pending_last_sent'::regclass")).scalars())
    scans = _scans(plan)
    assert scans and {node for node, _ in scans} == {"Index Scan"}
    assert {index for _, index in scans} <= copies


@pytest.mark.parametrize(
    ("column", "bounds", "constraint"),
    [("timeout_s", limits.TIMEOUT_S, "ck_triggers_timeout_range"),
     ("max_attempts", limits.MAX_ATTEMPTS, "ck_triggers_max_attempts_range")],
)
def test_the_database_s_bounds_are_the_ones_the_api_checks(
    db: sessionmaker[Session], column: str, bounds: tuple[int, int], constraint: str
) -> None:
    low, high = bounds
    with db.begin() as session:
        session.execute(insert(Trigger).values(**_trigger(**{column: low})))
        session.execute(insert(Trigger).values(**_trigger(**{column: high})))
    for outside in (low - 1, high + 1):
        with pytest.raises(IntegrityError, match=constraint), db.begin() as session:
            session.execute(insert(Trigger).values(**_trigger(**{column: outside})))


def _relations(plan: list[dict]) -> set[str]:
    nodes, stack = [], [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", []))
    return {n["Relation Name"] for n in nodes if "Relation Name" in n}


def test_the_claim_and_finish_read_only_the_partitions_of_their_runs_days(
    db: sessionmaker[Session], engine: Engine,
) -> None:
    from sqlalchemy.dialects import postgresql

    from app.history import partitions
    from app.queries import attempts

    with engine.connect() as conn:
        day = partitions.existing_days(conn)[-1]

    def plan(statement: Any, **values: Any) -> set[str]:
        compiled = statement.compile(dialect=postgresql.dialect())
        with engine.connect() as conn:
            explained = conn.exec_driver_sql(
                f"EXPLAIN (FORMAT JSON) {compiled.string}",
                {**compiled.params, **values}).scalar_one()
        return {name for name in _relations(explained)
                if name.startswith(("invocations_", "invocation_attempts_"))}

    at = partitions.day_start(day) + dt.timedelta(hours=3)
    keys = {"b_ids": [str(uuid.uuid4()), str(uuid.uuid4())], "b_days": [at]}
    one_day = {f"invocations_p{day:%Y%m%d}"}
    assert plan(attempts._LOCK_TENANTS, **keys) == one_day
    # Without a tenant cap; with one, the count of the tenant's running invocations
    # reads each partition's partial index of running rows, as the single claim's does.
    assert plan(attempts._CLAIM_MANY, **keys, b_deployment_id=None, b_tenant_cap=0) == one_day
    one = {f"b_{name}": [None] for name, _ in attempts._FINISH_COLUMNS}
    finish = {**one, "b_id": [keys["b_ids"][0]], "b_day": [at], "b_attempt": [1],
              "b_retry": [False], "b_delay_s": [0.0], "b_published": [False],
              "b_status": ["succeeded"], "b_lost_error": ["lost"], "b_outcome": ["succeeded"],
              "b_days": [at]}
    assert plan(attempts._FINISH_MANY, **finish) == {
        *one_day, f"invocation_attempts_p{day:%Y%m%d}"}


def test_a_tick_taking_held_runs_ahead_reads_no_cron_row_not_due_yet(
    db: sessionmaker[Session], engine: Engine,
) -> None:
    # 2,000 cron triggers due in 30 s (next minute's), 3 due now, 2 one-time triggers
    # due in 20 s. The claim that also takes the held kinds 75 s ahead reads the 5 rows
    # it takes, not the 2,000: ix_triggers_held_due holds no cron row.
    from sqlalchemy import event

    from app.queries import claims

    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO triggers (tenant_id, project_id, name, cron_expression,"
            " next_run_at, target_kind, webhook_url)"
            " SELECT 't1', 'p1', 'next-minute-' || g, '* * * * *',"
            " now() + interval '30 seconds', 'webhook', 'https://example.com'"
            " FROM generate_series(1, 2000) AS g"))
        conn.execute(text(
            "INSERT INTO triggers (tenant_id, project_id, name, cron_expression,"
            " next_run_at, target_kind, webhook_url)"
            " SELECT 't1', 'p1', 'due-' || g, '* * * * *', now() - interval '1 second',"
            " 'webhook', 'https://example.com' FROM generate_series(1, 3) AS g"))
        conn.execute(text(
            "INSERT INTO triggers (tenant_id, project_id, name, run_at, next_run_at,"
            " target_kind, webhook_url)"
            " SELECT 't1', 'p1', 'once-' || g, now() + interval '20 seconds',"
            " now() + interval '20 seconds', 'webhook', 'https://example.com'"
            " FROM generate_series(1, 2) AS g"))
        conn.execute(text("ANALYZE triggers"))
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FOR UPDATE" in statement and "triggers" in statement:
            statements.append((statement, parameters))

    with db.begin() as session:
        now = session.execute(text("SELECT now()")).scalar_one()
        event.listen(engine, "before_cursor_execute", capture)
        try:
            claimed = claims.claim_due_triggers(session, now, 500,
                                                hold_until=now + dt.timedelta(seconds=75))
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        session.rollback()
    assert sorted(row.cron_expression or "once" for row in claimed) == [
        "* * * * *"] * 3 + ["once"] * 2
    statement, parameters = statements[0]
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection.cursor()
        raw.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters)
        plan = raw.fetchone()[0]
        conn.rollback()
    nodes, stack = [], [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", []))
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"]
    # Index entries and table rows the scans of triggers went through.
    read = sum(n["Actual Rows"] * n["Actual Loops"] + n.get("Rows Removed by Filter", 0)
               + n.get("Rows Removed by Index Recheck", 0)
               for n in nodes if n.get("Relation Name") == "triggers" or "Index Name" in n)
    assert read <= 20, read  # the 5 rows, through an index and the table, twice
