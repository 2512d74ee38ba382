"""runs that wait in the database for a worker: invocations.parked_at

Work-conserving fairness (app.firing.fairness): a tick publishes at most one batch of
each tenant's runs as messages and leaves the rest *parked*: pending, no message, with
``parked_at`` set. A worker with free delivery threads takes parked runs straight from
the database, oldest ``parked_at`` first, so one tenant's burst never queues ahead of
another tenant's runs in the broker, and a tenant alone still uses every thread. A run
that waited in a worker too long for a thread is parked the same way, and so is a run
held back by the optional hard cap (CRONBEAT_TENANT_MAX_RUNNING).

The sweep's two partial indexes leave parked rows out: they have no message to lose,
and their number is the backlog's, which a tick must not read.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_LAST_SENT = "greatest(coalesce(enqueued_at, created_at), run_after)"


def _sweep_indexes(extra: str) -> None:
    op.create_index(
        "ix_invocations_pending_last_sent", "invocations", [sa.literal_column(_LAST_SENT)],
        unique=False, postgresql_where=sa.text(f"status = 'pending'{extra}"),
    )
    op.create_index(
        "ix_invocations_retry_due", "invocations", ["run_after"], unique=False,
        postgresql_where=sa.text(f"status = 'pending' AND enqueued_at IS NULL{extra}"),
    )


def upgrade() -> None:
    op.add_column("invocations",
                  sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_invocations_parked", "invocations", ["tenant_id", "parked_at"], unique=False,
        postgresql_where=sa.text("status = 'pending' AND parked_at IS NOT NULL"),
    )
    op.drop_index("ix_invocations_retry_due", table_name="invocations")
    op.drop_index("ix_invocations_pending_last_sent", table_name="invocations")
    _sweep_indexes(" AND parked_at IS NULL")


def downgrade() -> None:
    op.drop_index("ix_invocations_retry_due", table_name="invocations")
    op.drop_index("ix_invocations_pending_last_sent", table_name="invocations")
    _sweep_indexes("")
    op.drop_index("ix_invocations_parked", table_name="invocations")
    op.drop_column("invocations", "parked_at")
