"""Evaluations keep their predictions (where the file is, how many images it holds) and are
recovered like runs when their worker dies (a heartbeat, and attempts counted).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 05:00:00+00:00

Evaluations recorded before this revision have no predictions and no heartbeat; their
``attempts`` start at 0. Adding a column with a default needs no table copy, on SQLite either.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("evaluations", sa.Column("predictions_uri", sa.Text(), nullable=True))
    op.add_column("evaluations", sa.Column("predictions_count", sa.Integer(), nullable=True))
    op.add_column(
        "evaluations", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "evaluations",
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("attempts")
        batch.drop_column("heartbeat_at")
        batch.drop_column("predictions_count")
        batch.drop_column("predictions_uri")
