"""invocations: index the retries that wait in the database, and each tenant's running rows

A retry longer than a tick is no longer a countdown message held by a worker: it stays
pending with run_after and no enqueued_at, and each tick publishes the ones now due. The
partial index holds only those rows, so the tick reads the due ones and nothing else.
Each attempt's claim counts its tenant's running invocations (the tenant's cap): a
partial index of the running rows by tenant.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_invocations_retry_due",
        "invocations",
        ["run_after"],
        unique=False,
        postgresql_where=sa.text("status = 'pending' AND enqueued_at IS NULL"),
    )
    op.create_index(
        "ix_invocations_running_tenant",
        "invocations",
        ["tenant_id"],
        unique=False,
        postgresql_where=sa.text("status = 'running'"),
    )


def downgrade() -> None:
    op.drop_index("ix_invocations_running_tenant", table_name="invocations")
    op.drop_index("ix_invocations_retry_due", table_name="invocations")
