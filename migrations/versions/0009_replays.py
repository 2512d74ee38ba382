"""replays: a failed invocation run again as a new one, once

``invocations.replay_of`` links a replay to the invocation it repeats, and
``occurrence_at`` keeps the original occurrence's time, which the delivery's body
carries (NULL: the row's own ``scheduled_for``). ``invocation_replays`` has one row per
replayed original, its primary key making a replay happen once whatever races.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("invocations", sa.Column("replay_of", sa.UUID(), nullable=True))
    op.add_column("invocations",
                  sa.Column("occurrence_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "invocation_replays",
        sa.Column("original_id", sa.UUID(), nullable=False),
        sa.Column("replay_id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("original_id", name=op.f("pk_invocation_replays")),
    )


def downgrade() -> None:
    op.drop_table("invocation_replays")
    op.drop_column("invocations", "occurrence_at")
    op.drop_column("invocations", "replay_of")
