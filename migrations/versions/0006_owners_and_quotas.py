"""Owners: datasets and model versions record the key that made them; deleted model versions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 19:00:00+00:00

Runs and experiments already record their key (``api_key_id``). Datasets and model versions get
one here; rows made before this revision are owned by no key, so only an admin key may change
them (a train key changes only what its own key made).

A model version can now be deleted. Its row stays as a tombstone (``deleted_at``) so that its
number is never handed out again, and it no longer holds its run: ``run_id`` becomes nullable
with ``ON DELETE SET NULL`` (deleting a run that a *live* version names is refused by the
records, with a 409 that names the versions). Downgrading drops the tombstones.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _owner_key(batch: Any, table: str) -> None:
    batch.add_column(sa.Column("api_key_id", sa.String(length=32), nullable=True))
    batch.create_foreign_key(
        op.f(f"fk_{table}_api_key_id_api_keys"), "api_keys", ["api_key_id"], ["id"],
        ondelete="SET NULL",
    )  # fmt: skip


def upgrade() -> None:
    # Existing rows get NULL: owned by no key, so only an admin key changes them.
    if op.get_context().as_sql and op.get_bind().dialect.name == "sqlite":
        # Offline SQLite has no table to reflect for the copy that adding a key needs: the
        # columns only (the records never rely on these keys to cascade).
        op.add_column("datasets", sa.Column("api_key_id", sa.String(length=32)))
        op.add_column("model_versions", sa.Column("api_key_id", sa.String(length=32)))
        op.add_column("model_versions", sa.Column("deleted_at", sa.DateTime(timezone=True)))
        op.create_index(op.f("ix_runs_api_key_id"), "runs", ["api_key_id"])
        return
    with op.batch_alter_table("datasets") as batch:
        _owner_key(batch, "datasets")
    with op.batch_alter_table("model_versions") as batch:
        _owner_key(batch, "model_versions")
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch.alter_column("run_id", existing_type=sa.String(length=32), nullable=True)
        batch.drop_constraint(op.f("fk_model_versions_run_id_runs"), type_="foreignkey")
        batch.create_foreign_key(
            op.f("fk_model_versions_run_id_runs"), "runs", ["run_id"], ["id"], ondelete="SET NULL"
        )
    op.create_index(op.f("ix_runs_api_key_id"), "runs", ["api_key_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_runs_api_key_id"), table_name="runs")
    op.execute(
        sa.text("DELETE FROM model_versions WHERE deleted_at IS NOT NULL OR run_id IS NULL")
    )
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint(op.f("fk_model_versions_run_id_runs"), type_="foreignkey")
        batch.create_foreign_key(
            op.f("fk_model_versions_run_id_runs"), "runs", ["run_id"], ["id"], ondelete="CASCADE"
        )
        batch.alter_column("run_id", existing_type=sa.String(length=32), nullable=False)
        batch.drop_constraint(op.f("fk_model_versions_api_key_id_api_keys"), type_="foreignkey")
        batch.drop_column("deleted_at")
        batch.drop_column("api_key_id")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_constraint(op.f("fk_datasets_api_key_id_api_keys"), type_="foreignkey")
        batch.drop_column("api_key_id")
