"""Multi-worker runs: ``runs.workers`` and the rendezvous table ``run_slots``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 11:50:00+00:00

A run trained across N workers (issue 13) has N slots, 0 the chief. A worker claims a slot by
writing its host and the port its collective-ops server will listen on; once all N are
claimed, every worker reads the cluster (``host:port`` in slot order) from here. Heartbeats
let a dead worker's slot be released. ``attempt`` counts the claims of a slot, and fences a
claim's later writes.

Runs recorded before this revision train on one worker (``workers`` 1, the server default:
adding it needs no table copy, on SQLite either). They have no slots: one-worker runs never
need one.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "runs", sa.Column("workers", sa.Integer(), nullable=False, server_default=sa.text("1"))
    )
    op.create_table(
        "run_slots",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("worker_host", sa.String(length=255), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_slots_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "slot", name=op.f("pk_run_slots")),
    )


def downgrade() -> None:
    op.drop_table("run_slots")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("workers")
