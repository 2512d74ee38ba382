"""schedules as code: triggers.managed_by

``cronbeat sync MODULE:APP`` writes the triggers its code declares and marks each with
the code that owns it ("MODULE:APP"); the API and the console then refuse to change
their definitions unless forced (app.editing.managed). NULL, as every existing trigger
is, means the API's own.

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


def upgrade() -> None:
    op.add_column("triggers", sa.Column("managed_by", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("triggers", "managed_by")
