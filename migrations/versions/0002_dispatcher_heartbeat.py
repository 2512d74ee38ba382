"""dispatcher heartbeat: the last tick's time, duration and deployment, for /metrics

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dispatcher_heartbeat",
        sa.Column("id", sa.Integer(), server_default="1", nullable=False),
        sa.Column("last_tick_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_tick_duration_ms", sa.Float(), nullable=True),
        sa.Column("last_tick_deployment_id", sa.String(length=100), nullable=True),
        sa.Column("last_tick_report", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_dispatcher_heartbeat_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatcher_heartbeat")),
    )
    # The single row every tick updates; no tick has run yet.
    op.execute("INSERT INTO dispatcher_heartbeat (id) VALUES (1)")


def downgrade() -> None:
    op.drop_table("dispatcher_heartbeat")
