"""alerts: channels, rules, each trigger's alert state, and the alerts themselves

``alert_channels`` are a project's signed webhooks for alerts; ``alert_rules`` hold a
project's default rule (``trigger_id`` NULL) and triggers' own; ``trigger_alert_state``
is each watched trigger's condition (app.alerting.rules); ``alerts`` is the outbox and
the history of alert deliveries. ``ix_invocations_unstarted`` serves the watchdog's
"didn't run" search over runs that never started.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _id() -> sa.Column:
    return sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"),
                     nullable=False)


def _scope() -> list[sa.Column]:
    return [sa.Column("tenant_id", sa.String(length=64), nullable=False),
            sa.Column("project_id", sa.String(length=64), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "alert_channels",
        _id(),
        *_scope(),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("signing_secret", sa.String(length=200), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_channels")),
        sa.UniqueConstraint("tenant_id", "project_id", "name",
                            name=op.f("uq_alert_channels_tenant_id_project_id_name")),
    )
    op.create_table(
        "alert_rules",
        _id(),
        *_scope(),
        sa.Column("trigger_id", sa.UUID(), nullable=True),
        sa.Column("on_failure", sa.Boolean(), nullable=False),
        sa.Column("failures_in_a_row", sa.Integer(), nullable=False),
        sa.Column("on_missed", sa.Boolean(), nullable=False),
        sa.Column("late_after_s", sa.Integer(), nullable=True),
        sa.Column("on_recovery", sa.Boolean(), nullable=False),
        sa.Column("on_didnt_run", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("failures_in_a_row BETWEEN 1 AND 1000",
                           name=op.f("ck_alert_rules_failures_range")),
        sa.CheckConstraint("late_after_s BETWEEN 1 AND 86400",
                           name=op.f("ck_alert_rules_late_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rules")),
    )
    op.create_index("uq_alert_rules_project", "alert_rules", ["tenant_id", "project_id"],
                    unique=True, postgresql_where=sa.text("trigger_id IS NULL"))
    op.create_index("uq_alert_rules_trigger", "alert_rules", ["trigger_id"],
                    unique=True, postgresql_where=sa.text("trigger_id IS NOT NULL"))
    op.create_table(
        "trigger_alert_state",
        sa.Column("trigger_id", sa.UUID(), nullable=False),
        *_scope(),
        sa.Column("condition", sa.String(length=16), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_outcome_for", _TS, nullable=True),
        sa.Column("didnt_run_seen_for", _TS, nullable=True),
        sa.Column("changed_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("trigger_id", name=op.f("pk_trigger_alert_state")),
    )
    op.create_table(
        "alerts",
        _id(),
        *_scope(),
        sa.Column("channel_id", sa.UUID(), nullable=False),
        sa.Column("trigger_id", sa.UUID(), nullable=True),
        sa.Column("invocation_id", sa.UUID(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("body", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("published_at", _TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("created_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')",
                           name=op.f("ck_alerts_status")),
        sa.CheckConstraint(
            "kind IN ('failing', 'missed', 'late', 'didnt_run', 'recovered', 'test')",
            name=op.f("ck_alerts_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index("ix_alerts_project_history", "alerts",
                    ["tenant_id", "project_id", "created_at"])
    op.create_index("ix_alerts_due", "alerts", ["next_attempt_at"],
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index("ix_alerts_created_at", "alerts", ["created_at"])
    op.create_index("ix_invocations_unstarted", "invocations", ["scheduled_for"],
                    postgresql_where=sa.text("status = 'pending' AND attempt = 0"))


def downgrade() -> None:
    op.drop_index("ix_invocations_unstarted", table_name="invocations")
    op.drop_table("alerts")
    op.drop_table("trigger_alert_state")
    op.drop_table("alert_rules")
    op.drop_table("alert_channels")
