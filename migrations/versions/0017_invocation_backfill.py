"""invocations.backfill: a run recorded by a backfill

A backfilled run is a manual run (``manual`` true: no alert, not cancelled by a pause,
left out of the start-lateness figures) of a past occurrence; this column tells it from
a run-now, so the console and the API can name each run's origin (scheduled, manual,
backfill, replay). A constant default: adding it rewrites no partition.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("invocations", sa.Column("backfill", sa.Boolean(),
                                           server_default=sa.text("false"), nullable=False))


def downgrade() -> None:
    op.drop_column("invocations", "backfill")
