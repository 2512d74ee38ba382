"""console: the session-signing secret every web process shares, and a pause's note

``console_secret`` holds one random key, created by the first web process that needs it
(unless CRONBEAT_CONSOLE_SECRET is set), so every web process signs and checks the
console's session cookies alike. ``triggers.pause_note`` is what the operator wrote
when pausing (the console's pause form); resuming clears it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("triggers", sa.Column("pause_note", sa.Text(), nullable=True))
    op.create_table(
        "console_secret",
        sa.Column("id", sa.Integer(), server_default="1", nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_console_secret_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_secret")),
    )


def downgrade() -> None:
    op.drop_table("console_secret")
    op.drop_column("triggers", "pause_note")
