"""history: invocations and attempts partitioned by day of scheduled_for; rollups

The history tables become PostgreSQL range partitions, one per UTC day of
``scheduled_for`` plus a default partition for anything outside them, so retention
drops a whole day (a metadata operation) instead of deleting millions of rows. Every
key includes the partition key: the primary keys become ``(id, scheduled_for)``, the
attempts carry their invocation's ``scheduled_for`` and reference it with a composite
foreign key, and ``UNIQUE (trigger_id, scheduled_for)`` (the idempotency key) is
unchanged. The foreign key from invocations to triggers goes: deleting a trigger no
longer rewrites its history (its rows keep their trigger_id).

Existing rows are copied: a partition for every day that holds any, and for yesterday
through three days ahead. The downgrade copies them back into plain tables (rows of
deleted triggers get a NULL trigger_id again, as the old foreign key wanted).

Also: ``trigger_day_stats`` (rollups kept forever) and ``history_state`` (the
maintenance's single row). Partition names and bounds in the DDL below come from
``datetime.date`` values computed here, never from input.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_LAST_SENT = "greatest(coalesce(enqueued_at, created_at), run_after)"
_AHEAD_DAYS = 3
_STATUS = sa.Enum(
    "pending", "running", "succeeded", "failed", "cancelled", "skipped", "missed",
    name="invocation_status", native_enum=False, create_constraint=False, length=16,
)
_INVOCATION_COLUMNS = (
    "id", "trigger_id", "tenant_id", "project_id", "scheduled_for", "status", "manual",
    "attempt", "enqueued_at", "run_after", "started_at", "finished_at", "lease_expires_at",
    "cancel_requested", "last_error", "response_status", "response_excerpt", "deployment_id",
    "created_at",
)
_ATTEMPT_COLUMNS = (
    "id", "invocation_id", "number", "deployment_id", "started_at", "finished_at", "outcome",
    "response_status", "error",
)


def _table(name: str, columns: tuple[str, ...]) -> sa.TableClause:
    return sa.table(name, *(sa.column(c) for c in columns))


def _copy(source: str, target: str, columns: tuple[str, ...]) -> None:
    """INSERT INTO target (columns) SELECT columns FROM source."""
    origin = _table(source, columns)
    op.execute(sa.insert(_table(target, columns)).from_select(
        list(columns), sa.select(*(origin.c[c] for c in columns))))


def _invocation_table(name: str, **kwargs: object) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("trigger_id", sa.UUID(), nullable=True),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", _STATUS, server_default="pending", nullable=False),
        sa.Column("manual", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "cancel_requested", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
        sa.Column("deployment_id", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        **kwargs,
    )


def _attempt_table(name: str, *, partitioned: bool) -> None:
    columns = [
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("invocation_id", sa.UUID(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.String(length=100), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    ]
    if partitioned:
        columns.insert(2, sa.Column("scheduled_for", sa.DateTime(timezone=True),
                                    nullable=False))
        op.create_table(name, *columns, postgresql_partition_by="RANGE (scheduled_for)")
    else:
        op.create_table(name, *columns)


def _attempt_ids() -> None:
    """The attempts' id sequence (a serial's), going on from the copied rows' ids."""
    op.execute("CREATE SEQUENCE invocation_attempts_id_seq OWNED BY invocation_attempts.id")
    op.execute("ALTER TABLE invocation_attempts ALTER COLUMN id"
               " SET DEFAULT nextval('invocation_attempts_id_seq')")
    op.execute("SELECT setval('invocation_attempts_id_seq',"
               " (SELECT coalesce(max(id), 0) + 1 FROM invocation_attempts), false)")


def _utc(day: dt.date) -> str:
    return dt.datetime.combine(day, dt.time(), dt.UTC).isoformat()


def _invocation_constraints(table: str, *, partitioned: bool) -> None:
    key = ["id", "scheduled_for"] if partitioned else ["id"]
    op.create_primary_key("pk_invocations", table, key)
    op.create_unique_constraint(
        "uq_invocations_trigger_id_scheduled_for", table, ["trigger_id", "scheduled_for"])
    op.create_check_constraint(op.f("ck_invocations_attempt_nonnegative"), table,
                                "attempt >= 0")
    op.create_check_constraint(
        op.f("ck_invocations_invocation_status"), table,
        "status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled', 'skipped',"
        " 'missed')",
    )
    op.create_index("ix_invocations_created_at", table, ["created_at"],
                    postgresql_using="brin")
    op.create_index("ix_invocations_pending_last_sent", table, [sa.literal_column(_LAST_SENT)],
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index("ix_invocations_retry_due", table, ["run_after"],
                    postgresql_where=sa.text("status = 'pending' AND enqueued_at IS NULL"))
    op.create_index("ix_invocations_running_tenant", table, ["tenant_id"],
                    postgresql_where=sa.text("status = 'running'"))
    op.create_index("ix_invocations_running", table, ["lease_expires_at"],
                    postgresql_where=sa.text("status = 'running'"))
    if partitioned:
        op.create_index("ix_invocations_project_history", table,
                        ["tenant_id", "project_id", "scheduled_for"])


def upgrade() -> None:
    bind = op.get_bind()
    _invocation_table("invocations_new", postgresql_partition_by="RANGE (scheduled_for)")
    _attempt_table("invocation_attempts_new", partitioned=True)
    today = bind.execute(sa.text("SELECT (now() AT TIME ZONE 'UTC')::date")).scalar_one()
    with_rows = bind.execute(sa.text(
        "SELECT DISTINCT (scheduled_for AT TIME ZONE 'UTC')::date FROM invocations"
    )).scalars()
    days = set(with_rows) | {today + dt.timedelta(days=n) for n in range(-1, _AHEAD_DAYS + 1)}
    for table in ("invocations", "invocation_attempts"):
        for day in sorted(days):
            op.execute(f"CREATE TABLE {table}_p{day:%Y%m%d} PARTITION OF {table}_new"
                       f" FOR VALUES FROM ('{_utc(day)}')"
                       f" TO ('{_utc(day + dt.timedelta(days=1))}')")
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table}_new DEFAULT")
    _copy("invocations", "invocations_new", _INVOCATION_COLUMNS)
    attempts = _table("invocation_attempts", _ATTEMPT_COLUMNS)
    invocations = _table("invocations", ("id", "scheduled_for"))
    op.execute(sa.insert(_table("invocation_attempts_new", (*_ATTEMPT_COLUMNS, "scheduled_for")))
               .from_select([*_ATTEMPT_COLUMNS, "scheduled_for"], sa.select(
                   *(attempts.c[c] for c in _ATTEMPT_COLUMNS), invocations.c.scheduled_for,
               ).join_from(attempts, invocations,
                           invocations.c.id == attempts.c.invocation_id)))
    op.drop_table("invocation_attempts")
    op.drop_table("invocations")
    op.rename_table("invocations_new", "invocations")
    op.rename_table("invocation_attempts_new", "invocation_attempts")
    _invocation_constraints("invocations", partitioned=True)
    op.create_primary_key("pk_invocation_attempts", "invocation_attempts",
                          ["id", "scheduled_for"])
    op.create_unique_constraint(
        "uq_invocation_attempts_invocation_id_number_scheduled_for", "invocation_attempts",
        ["invocation_id", "number", "scheduled_for"])
    op.create_foreign_key(
        "fk_invocation_attempts_invocation_id_invocations", "invocation_attempts",
        "invocations", ["invocation_id", "scheduled_for"], ["id", "scheduled_for"],
        ondelete="CASCADE")
    _attempt_ids()

    op.create_table(
        "trigger_day_stats",
        sa.Column("trigger_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        *(sa.Column(status, sa.Integer(), server_default="0", nullable=False) for status in (
            "pending", "running", "succeeded", "failed", "cancelled", "skipped", "missed")),
        sa.Column("lateness_p50_s", sa.Float(), nullable=True),
        sa.Column("lateness_p95_s", sa.Float(), nullable=True),
        sa.Column("rolled_up_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("trigger_id", "day", name="pk_trigger_day_stats"),
    )
    op.create_index("ix_trigger_day_stats_scope", "trigger_day_stats",
                    ["tenant_id", "project_id", "trigger_id", "day"])
    op.create_table(
        "history_state",
        sa.Column("id", sa.Integer(), server_default="1", nullable=False),
        sa.Column("rolled_up_through", sa.Date(), nullable=True),
        sa.Column("partitions_dropped", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("rows_dropped", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_history_state_single_row")),
        sa.PrimaryKeyConstraint("id", name="pk_history_state"),
    )
    op.execute("INSERT INTO history_state (id) VALUES (1)")


def downgrade() -> None:
    op.drop_table("history_state")
    op.drop_table("trigger_day_stats")
    _invocation_table("invocations_old")
    _attempt_table("invocation_attempts_old", partitioned=False)
    _copy("invocations", "invocations_old", _INVOCATION_COLUMNS)
    _copy("invocation_attempts", "invocation_attempts_old", _ATTEMPT_COLUMNS)
    # The old foreign key to triggers nulled the trigger of a deleted trigger's rows.
    op.execute("UPDATE invocations_old i SET trigger_id = NULL WHERE trigger_id IS NOT NULL"
               " AND NOT EXISTS (SELECT 1 FROM triggers t WHERE t.id = i.trigger_id)")
    op.drop_table("invocation_attempts")
    op.drop_table("invocations")
    op.rename_table("invocations_old", "invocations")
    op.rename_table("invocation_attempts_old", "invocation_attempts")
    _invocation_constraints("invocations", partitioned=False)
    op.create_foreign_key("fk_invocations_trigger_id_triggers", "invocations", "triggers",
                          ["trigger_id"], ["id"], ondelete="SET NULL")
    op.create_primary_key("pk_invocation_attempts", "invocation_attempts", ["id"])
    op.create_unique_constraint("uq_invocation_attempts_invocation_id_number",
                                "invocation_attempts", ["invocation_id", "number"])
    op.create_foreign_key(
        "fk_invocation_attempts_invocation_id_invocations", "invocation_attempts",
        "invocations", ["invocation_id"], ["id"], ondelete="CASCADE")
    _attempt_ids()
