"""Evaluations keep their predictions: where the file is, and how many images it holds.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 05:00:00+00:00

Two nullable columns: evaluations recorded before this revision simply have no predictions.
Adding a nullable column needs no table copy, on SQLite either.
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


def downgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("predictions_count")
        batch.drop_column("predictions_uri")
