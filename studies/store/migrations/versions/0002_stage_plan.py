"""Stages record what the plan gave them and their trials' own run time.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stagetune_stages") as batch:  # batch: SQLite alters by copy
        batch.add_column(sa.Column("planned", sa.JSON, nullable=True))
        batch.add_column(sa.Column("trial_seconds", sa.Float, nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("stagetune_stages") as batch:
        batch.drop_column("trial_seconds")
        batch.drop_column("planned")
