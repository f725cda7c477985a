"""Experiments: grids and random searches of runs; runs.experiment_id links a run to its cell.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 12:00:00+00:00

Spelled out in plain SQLAlchemy types (no imports from core), as 0001 is. On SQLite the new
``runs.experiment_id`` and its foreign key are added in batch mode (the table is copied: SQLite
cannot add a constraint to a table), except when writing offline SQL (see ``upgrade``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXPERIMENT_KINDS = ("grid", "random")


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("cells", sa.JSON(), nullable=False),
        sa.Column("api_key_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ({})".format(", ".join(repr(k) for k in EXPERIMENT_KINDS)),
            name=op.f("ck_experiments_experiment_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_experiments_api_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
    )
    op.create_index(op.f("ix_experiments_created_at"), "experiments", ["created_at"])
    context = op.get_context()
    if context.dialect.name == "sqlite" and context.as_sql:
        # Offline SQL for SQLite (`alembic upgrade --sql`): batch mode would need a live
        # database to copy the table from, so add the column with its REFERENCES clause in
        # place. Same behaviour; only the constraint is written on the column, not the table.
        op.execute(
            "ALTER TABLE runs ADD COLUMN experiment_id VARCHAR(32) "
            "CONSTRAINT fk_runs_experiment_id_experiments "
            "REFERENCES experiments (id) ON DELETE SET NULL"
        )
    else:
        # SQLite cannot add a foreign key to a table: batch mode copies it (PostgreSQL: ALTERs).
        with op.batch_alter_table("runs") as batch:
            batch.add_column(sa.Column("experiment_id", sa.String(length=32), nullable=True))
            batch.create_foreign_key(
                op.f("fk_runs_experiment_id_experiments"),
                "experiments",
                ["experiment_id"],
                ["id"],
                ondelete="SET NULL",
            )
    op.create_index(op.f("ix_runs_experiment_id"), "runs", ["experiment_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_runs_experiment_id"), table_name="runs")
    sqlite = op.get_context().dialect.name == "sqlite"
    # SQLite cannot drop a column that has a foreign key: batch mode copies the table without it.
    with op.batch_alter_table("runs") as batch:
        if not sqlite:
            batch.drop_constraint(op.f("fk_runs_experiment_id_experiments"), type_="foreignkey")
        batch.drop_column("experiment_id")
    op.drop_index(op.f("ix_experiments_created_at"), table_name="experiments")
    op.drop_table("experiments")
