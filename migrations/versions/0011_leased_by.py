"""leases name their worker, and the dispatcher remembers the broker's epoch

A dead worker's runs are taken back at once:

``invocations.leased_by`` is the process registry id (``process_heartbeats.id``) of the
worker whose attempt holds the run. When that process stops heartbeating, the other
workers take its running runs back within about 30 s, instead of waiting for each
lease to run out (``timeout_s`` + 60 s). No foreign key: the registry row of a dead
process is deleted after a while, and the history keeps who ran what.

``dispatcher_heartbeat.broker_epoch`` is the token the dispatcher last found in the
broker's Redis: a different one (the broker restarted empty) has every pending run
published again at once.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("invocations", sa.Column("leased_by", sa.UUID(), nullable=True))
    op.add_column("dispatcher_heartbeat",
                  sa.Column("broker_epoch", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("dispatcher_heartbeat", "broker_epoch")
    op.drop_column("invocations", "leased_by")
