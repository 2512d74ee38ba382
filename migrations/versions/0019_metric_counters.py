"""/metrics counters that outlive the history: counter_totals, counted_before

``/metrics`` counts finished invocations, attempts, alerts and the start lateness of
scheduled runs as Prometheus counters (app.history.counters), by when each row entered
the history. History leaves the database (day partitions dropped, alerts pruned), so
``counter_totals`` holds, for good, the counts of the hours the maintenance closed
(and of removed rows no closed hour held); ``history_state.counted_before`` is where
the live count starts: invocations by ``created_at`` (its BRIN index exists), attempts
by ``started_at`` through a new BRIN index (a few bytes per block range; an insert
into a range not summarized yet writes nothing), alerts by ``created_at``.
``history_state.watched_since`` is where the maintenance's age starts before its first
run.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "counter_totals",
        sa.Column("family", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=False),
        sa.Column("value", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("family", "label", name=op.f("pk_counter_totals")),
    )
    op.add_column("history_state", sa.Column("counted_before", _TS, nullable=True))
    op.add_column("history_state", sa.Column(
        "watched_since", _TS, server_default=sa.text("now()"), nullable=False))
    op.create_index("ix_invocation_attempts_started_at", "invocation_attempts",
                    ["started_at"], postgresql_using="brin")


def downgrade() -> None:
    op.drop_index("ix_invocation_attempts_started_at", table_name="invocation_attempts")
    op.drop_column("history_state", "watched_since")
    op.drop_column("history_state", "counted_before")
    op.drop_table("counter_totals")
