"""Studies record when and by whom they were queued (the queue's order, each token's count).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stagetune_studies") as batch:  # batch: SQLite alters by copy
        batch.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("queued_by", sa.String(32), nullable=False, server_default=""))
    op.execute("UPDATE stagetune_studies SET queued_at = created_at")
    with op.batch_alter_table("stagetune_studies") as batch:
        batch.alter_column("queued_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("stagetune_studies") as batch:
        batch.drop_column("queued_by")
        batch.drop_column("queued_at")
