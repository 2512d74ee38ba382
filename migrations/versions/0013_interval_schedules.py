"""interval schedules: triggers.interval_s and triggers.start_at

A trigger's schedule is now one of three kinds (app.schedule.kinds): a cron expression,
one ``run_at``, or every ``interval_s`` seconds from its ``start_at`` anchor. The check
that exactly one kind is set now counts three columns; an interval always has its
anchor, and nothing else does.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_INTERVAL_CHECKS = {
    "ck_triggers_interval_has_start": "(interval_s IS NULL) = (start_at IS NULL)",
    "ck_triggers_interval_range": "interval_s IS NULL OR interval_s >= 1",
}


def upgrade() -> None:
    op.add_column("triggers", sa.Column("interval_s", sa.Integer(), nullable=True))
    op.add_column("triggers", sa.Column("start_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_constraint(op.f("ck_triggers_exactly_one_schedule"), "triggers", type_="check")
    op.create_check_constraint(
        op.f("ck_triggers_exactly_one_schedule"), "triggers",
        "num_nonnulls(cron_expression, run_at, interval_s) = 1")
    for name, condition in _INTERVAL_CHECKS.items():
        op.create_check_constraint(op.f(name), "triggers", condition)


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM triggers WHERE interval_s IS NOT NULL"))
    for name in _INTERVAL_CHECKS:
        op.drop_constraint(op.f(name), "triggers", type_="check")
    op.drop_constraint(op.f("ck_triggers_exactly_one_schedule"), "triggers", type_="check")
    op.create_check_constraint(
        op.f("ck_triggers_exactly_one_schedule"), "triggers",
        "(cron_expression IS NULL) <> (run_at IS NULL)")
    op.drop_column("triggers", "start_at")
    op.drop_column("triggers", "interval_s")
