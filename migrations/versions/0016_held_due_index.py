"""the held kinds' due index: ix_triggers_held_due

A tick also takes the one-time and interval occurrences due before the next tick
(app.firing.dispatch). It reads them through this partial index, which holds no cron
row, so next minute's cron triggers are never read ahead: a tick still costs time in
proportion to the rows it takes.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_triggers_held_due", "triggers", ["next_run_at"], unique=False,
        postgresql_where=sa.text("enabled AND next_run_at IS NOT NULL"
                                 " AND cron_expression IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_triggers_held_due", table_name="triggers")
