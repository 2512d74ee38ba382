"""invocations: index the sweep's expression; drop an index no query uses

The sweep looks for pending rows whose message was last sent before a cutoff, ordered by
GREATEST(COALESCE(enqueued_at, created_at), run_after). Indexing that expression (only
pending rows) makes it a range scan over the stale rows instead of a sort of every
pending row. (tenant_id, project_id, created_at) served no query and slowed every insert
of the dispatcher.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_LAST_SENT = "greatest(coalesce(enqueued_at, created_at), run_after)"


def upgrade() -> None:
    op.drop_index("ix_invocations_pending", table_name="invocations")
    op.drop_index("ix_invocations_tenant_id_project_id_created_at", table_name="invocations")
    op.create_index(
        "ix_invocations_pending_last_sent",
        "invocations",
        [sa.literal_column(_LAST_SENT)],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_invocations_pending_last_sent", table_name="invocations")
    op.create_index(
        "ix_invocations_tenant_id_project_id_created_at",
        "invocations",
        ["tenant_id", "project_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_invocations_pending",
        "invocations",
        ["enqueued_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
