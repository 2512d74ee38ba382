"""overlap policy buffer_one

A run that finds another run of its trigger running waits and starts as soon as that
one ends; one more that comes meanwhile is recorded missed (app.firing.runner). The
overlap_policy column's CHECK now admits the value.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_NAME = "ck_triggers_overlap_policy"


def upgrade() -> None:
    op.drop_constraint(op.f(_NAME), "triggers", type_="check")
    op.create_check_constraint(op.f(_NAME), "triggers",
                               "overlap_policy IN ('allow', 'skip', 'buffer_one')")


def downgrade() -> None:
    op.execute("UPDATE triggers SET overlap_policy = 'skip' WHERE overlap_policy = 'buffer_one'")
    op.drop_constraint(op.f(_NAME), "triggers", type_="check")
    op.create_check_constraint(op.f(_NAME), "triggers", "overlap_policy IN ('allow', 'skip')")
