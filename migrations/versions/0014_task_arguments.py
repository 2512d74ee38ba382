"""task targets call the task with its own arguments (task_args, task_kwargs,
task_envelope) and may wait for its outcome (task_outcome)

A task target now sends the task's own ``args`` (a JSON array) and ``kwargs`` (a JSON
object), with the occurrence's facts in a message header. The task triggers saved before
this revision were written for the single envelope argument, so they keep it:
``task_envelope`` is set on them, and a new task trigger has it off unless it asks.
``task_outcome`` (off by default) makes a run wait for the task's own outcome, which
the user's worker reports with cronbeat.celery installed.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("triggers", sa.Column("task_args", JSONB(), nullable=True))
    op.add_column("triggers", sa.Column("task_kwargs", JSONB(), nullable=True))
    op.add_column("triggers", sa.Column("task_envelope", sa.Boolean(), nullable=False,
                                        server_default=sa.text("false")))
    op.add_column("triggers", sa.Column("task_outcome", sa.Boolean(), nullable=False,
                                        server_default=sa.text("false")))
    triggers = sa.table("triggers", sa.column("target_kind", sa.String),
                        sa.column("task_envelope", sa.Boolean))
    op.execute(triggers.update().where(triggers.c.target_kind == "task")
               .values(task_envelope=True))


def downgrade() -> None:
    op.drop_column("triggers", "task_outcome")
    op.drop_column("triggers", "task_envelope")
    op.drop_column("triggers", "task_kwargs")
    op.drop_column("triggers", "task_args")
