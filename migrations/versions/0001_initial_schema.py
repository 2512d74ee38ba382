"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_api_keys_tenant_id_name")),
    )
    op.create_table(
        "scheduler_state",
        sa.Column("id", sa.Integer(), server_default="1", nullable=False),
        sa.Column("generation", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("active_deployment_id", sa.String(length=100), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_scheduler_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduler_state")),
    )
    op.create_table(
        "triggers",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("cron_expression", sa.String(length=200), nullable=True),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_scheduled_for", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "target_kind",
            sa.Enum(
                "webhook",
                "task",
                name="target_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("webhook_url", sa.String(length=2048), nullable=True),
        sa.Column("webhook_method", sa.String(length=8), server_default="POST", nullable=False),
        sa.Column(
            "webhook_headers",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("signing_secret", sa.String(length=200), nullable=True),
        sa.Column("task_name", sa.String(length=200), nullable=True),
        sa.Column("task_queue", sa.String(length=200), nullable=True),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("message_template", sa.Text(), nullable=True),
        sa.Column("max_attempts", sa.Integer(), server_default="3", nullable=False),
        sa.Column("backoff_base_s", sa.Integer(), server_default="2", nullable=False),
        sa.Column("backoff_cap_s", sa.Integer(), server_default="300", nullable=False),
        sa.Column("timeout_s", sa.Integer(), server_default="30", nullable=False),
        sa.Column(
            "misfire_policy",
            sa.Enum(
                "run_once",
                "run_all",
                "skip",
                name="misfire_policy",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="run_once",
            nullable=False,
        ),
        sa.Column("misfire_grace_s", sa.Integer(), server_default="300", nullable=False),
        sa.Column(
            "overlap_policy",
            sa.Enum(
                "allow",
                "skip",
                name="overlap_policy",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="allow",
            nullable=False,
        ),
        sa.Column("ref", sa.String(length=200), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(target_kind = 'webhook' AND webhook_url IS NOT NULL)"
            " OR (target_kind = 'task' AND task_name IS NOT NULL)",
            name=op.f("ck_triggers_target_complete"),
        ),
        sa.CheckConstraint(
            "(cron_expression IS NULL) <> (run_at IS NULL)",
            name=op.f("ck_triggers_exactly_one_schedule"),
        ),
        sa.CheckConstraint(
            "NOT enabled OR next_run_at IS NOT NULL", name=op.f("ck_triggers_enabled_has_next_run")
        ),
        sa.CheckConstraint(
            "backoff_base_s >= 0 AND backoff_cap_s >= backoff_base_s",
            name=op.f("ck_triggers_backoff_range"),
        ),
        sa.CheckConstraint(
            "max_attempts BETWEEN 1 AND 100", name=op.f("ck_triggers_max_attempts_range")
        ),
        sa.CheckConstraint(
            "misfire_grace_s >= 0", name=op.f("ck_triggers_misfire_grace_nonnegative")
        ),
        sa.CheckConstraint("timeout_s BETWEEN 1 AND 3600", name=op.f("ck_triggers_timeout_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triggers")),
        sa.UniqueConstraint(
            "tenant_id", "project_id", "name", name=op.f("uq_triggers_tenant_id_project_id_name")
        ),
    )
    # Serves the dispatcher's due query alone (see app.models.Trigger).
    op.create_index(
        "ix_triggers_due",
        "triggers",
        ["next_run_at"],
        unique=False,
        postgresql_where=sa.text("enabled AND next_run_at IS NOT NULL"),
    )
    op.create_index(op.f("ix_triggers_ref"), "triggers", ["ref"], unique=False)
    # The single row the deploy fencing updates atomically.
    op.execute("INSERT INTO scheduler_state (id, generation) VALUES (1, 0)")
    op.create_table(
        "invocations",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("trigger_id", sa.UUID(), nullable=True),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                "skipped",
                "missed",
                name="invocation_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="pending",
            nullable=False,
        ),
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
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("attempt >= 0", name=op.f("ck_invocations_attempt_nonnegative")),
        sa.ForeignKeyConstraint(
            ["trigger_id"],
            ["triggers.id"],
            name=op.f("fk_invocations_trigger_id_triggers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invocations")),
        sa.UniqueConstraint(
            "trigger_id", "scheduled_for", name=op.f("uq_invocations_trigger_id_scheduled_for")
        ),
    )
    op.create_index(
        "ix_invocations_pending",
        "invocations",
        ["enqueued_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_invocations_running",
        "invocations",
        ["lease_expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index(
        "ix_invocations_tenant_id_project_id_created_at",
        "invocations",
        ["tenant_id", "project_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "invocation_attempts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("invocation_id", sa.UUID(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.String(length=100), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["invocation_id"],
            ["invocations.id"],
            name=op.f("fk_invocation_attempts_invocation_id_invocations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invocation_attempts")),
        sa.UniqueConstraint(
            "invocation_id", "number", name=op.f("uq_invocation_attempts_invocation_id_number")
        ),
    )


def downgrade() -> None:
    op.drop_table("invocation_attempts")
    op.drop_index("ix_invocations_tenant_id_project_id_created_at", table_name="invocations")
    op.drop_index(
        "ix_invocations_running",
        table_name="invocations",
        postgresql_where=sa.text("status = 'running'"),
    )
    op.drop_index(
        "ix_invocations_pending",
        table_name="invocations",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_table("invocations")
    op.drop_index(op.f("ix_triggers_ref"), table_name="triggers")
    op.drop_index(
        "ix_triggers_due",
        table_name="triggers",
        postgresql_where=sa.text("enabled AND next_run_at IS NOT NULL"),
    )
    op.drop_table("triggers")
    op.drop_table("scheduler_state")
    op.drop_table("api_keys")
