"""deployments and process_heartbeats: standby processes, guarded activation, deploy status

``deployments`` remembers which ids were ever activated (a process of such an id that is
not the active one was superseded; one of an id never activated is a standby).
``process_heartbeats`` holds one row per live worker, dispatcher and beat process.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("deployment_id", sa.String(length=100), nullable=False),
        sa.Column("first_activated_at", sa.DateTime(timezone=True),
                  server_default=sa.text("now()"), nullable=False),
        sa.Column("last_activated_at", sa.DateTime(timezone=True),
                  server_default=sa.text("now()"), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("deployment_id", name=op.f("pk_deployments")),
    )
    # The active deployment of an existing installation was activated before this
    # table existed: record it, so its processes stay "superseded" after a later change.
    op.execute(
        "INSERT INTO deployments (deployment_id, generation) "
        "SELECT active_deployment_id, generation FROM scheduler_state "
        "WHERE active_deployment_id IS NOT NULL"
    )
    op.create_table(
        "process_heartbeats",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("deployment_id", sa.String(length=100), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", postgresql.ARRAY(sa.String(length=200)), server_default="{}",
                  nullable=False),
        sa.Column("registered_generation", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("consuming", sa.Boolean(), nullable=True),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("kind IN ('worker', 'dispatcher', 'beat')",
                           name=op.f("ck_process_heartbeats_kind")),
        sa.CheckConstraint("role IN ('active', 'standby', 'superseded')",
                           name=op.f("ck_process_heartbeats_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_process_heartbeats")),
    )
    op.create_index(op.f("ix_process_heartbeats_deployment_id"), "process_heartbeats",
                    ["deployment_id"], unique=False)
    op.create_index(op.f("ix_process_heartbeats_last_seen_at"), "process_heartbeats",
                    ["last_seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_process_heartbeats_last_seen_at"), table_name="process_heartbeats")
    op.drop_index(op.f("ix_process_heartbeats_deployment_id"), table_name="process_heartbeats")
    op.drop_table("process_heartbeats")
    op.drop_table("deployments")
