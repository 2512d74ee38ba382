"""/metrics counters that outlive the history: counter_totals, counter_days

``/metrics`` counts finished invocations, attempts, alerts and the start lateness of
scheduled runs as Prometheus counters (app.history.counters). History leaves the
database (day partitions dropped, alerts pruned), so what left is kept here:
``counter_days`` holds the counts of the hours already closed, by day, and
``counter_totals`` what the retention removed; ``history_state.counted_before`` is
where the live count starts. BRIN indexes on ``scheduled_for`` serve that live count
(a few bytes per block range; an insert into a range not summarized yet writes
nothing). ``history_state.watched_since`` is where the maintenance's age starts
before its first run.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _series() -> list[sa.Column]:
    return [
        sa.Column("family", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=False),
        sa.Column("value", sa.BigInteger(), server_default="0", nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "counter_totals", *_series(),
        sa.PrimaryKeyConstraint("family", "label", name=op.f("pk_counter_totals")),
    )
    op.create_table(
        "counter_days",
        sa.Column("day", sa.Date(), nullable=False), *_series(),
        sa.PrimaryKeyConstraint("day", "family", "label", name=op.f("pk_counter_days")),
    )
    op.add_column("history_state", sa.Column("counted_before", _TS, nullable=True))
    op.add_column("history_state", sa.Column(
        "watched_since", _TS, server_default=sa.text("now()"), nullable=False))
    op.create_index("ix_invocations_scheduled_for", "invocations", ["scheduled_for"],
                    postgresql_using="brin")
    op.create_index("ix_invocation_attempts_scheduled_for", "invocation_attempts",
                    ["scheduled_for"], postgresql_using="brin")


def downgrade() -> None:
    op.drop_index("ix_invocation_attempts_scheduled_for", table_name="invocation_attempts")
    op.drop_index("ix_invocations_scheduled_for", table_name="invocations")
    op.drop_column("history_state", "watched_since")
    op.drop_column("history_state", "counted_before")
    op.drop_table("counter_days")
    op.drop_table("counter_totals")
