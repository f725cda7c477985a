"""Evaluations keep ``max_attempts`` as a column, as runs do: one job lifecycle for both.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 16:00:00+00:00

Until this revision the worker's sweeper passed ``RESNET_MAX_ATTEMPTS`` (3 unless set) when it
reclaimed an evaluation; evaluations recorded before it get 3, the setting's default. Adding a
column with a server default needs no table copy, on SQLite either.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "evaluations",
        sa.Column("max_attempts", sa.Integer(), nullable=False, server_default=sa.text("3")),
    )


def downgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("max_attempts")
