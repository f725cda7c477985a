"""Adaptive searches (ASHA, median stopping): a ``paused`` run status and the trials' rungs.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 11:00:00+00:00

A trial of an adaptive search waits as ``paused`` (not started yet, or stopped at a rung until
the search promotes it or stops it early): the CHECK constraint on ``runs.status`` gains the
value. ``trial_rungs`` keeps each trial's report at each rung and what the search decided.

SQLite cannot alter a constraint: batch mode copies ``runs`` with the new one. For offline SQL
(``alembic upgrade --sql``) there is no table to reflect, so the copy is made from ``runs`` as
revision 0006 left it, spelled out here (:func:`_runs_at_0006`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
NEW_RUN_STATUSES = (*OLD_RUN_STATUSES, "paused")
CHECK = "ck_runs_run_status"


def _one_of(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _runs_at_0006(statuses: Sequence[str]) -> sa.Table:
    """``runs`` as revisions 0001, 0003 and 0006 built it, with ``statuses`` in its CHECK."""
    utc = sa.DateTime(timezone=True)
    return sa.Table(
        "runs",
        sa.MetaData(),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("architecture", sa.String(length=64), nullable=False),
        sa.Column("dataset", sa.String(length=1024), nullable=False),
        sa.Column("dataset_id", sa.String(length=32), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("api_key_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", utc, nullable=False),
        sa.Column("started_at", utc, nullable=True),
        sa.Column("finished_at", utc, nullable=True),
        sa.Column("heartbeat_at", utc, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("worker_host", sa.String(length=255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column("epochs_planned", sa.Integer(), nullable=True),
        sa.Column("epochs_completed", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("out_dir", sa.Text(), nullable=True),
        sa.Column("experiment_id", sa.String(length=32), nullable=True),
        sa.CheckConstraint(_one_of("status", statuses), name=CHECK),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name="fk_runs_api_key_id_api_keys",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name="fk_runs_dataset_id_datasets",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], name="fk_runs_experiment_id_experiments",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.Index("ix_runs_status", "status"),
        sa.Index("ix_runs_architecture", "architecture"),
        sa.Index("ix_runs_dataset", "dataset"),
        sa.Index("ix_runs_created_at", "created_at"),
        sa.Index("ix_runs_experiment_id", "experiment_id"),
        sa.Index("ix_runs_api_key_id", "api_key_id"),
    )  # fmt: skip


def _replace_status_check(old: Sequence[str], new: Sequence[str]) -> None:
    if op.get_context().dialect.name == "sqlite":
        # The copy is made from the table as spelled out, online and offline alike, so what
        # SQLite's reflection does or does not see of a CHECK constraint cannot matter.
        with op.batch_alter_table(
            "runs", copy_from=_runs_at_0006(old), recreate="always"
        ) as batch:
            batch.drop_constraint(op.f(CHECK), type_="check")
            batch.create_check_constraint(op.f(CHECK), sa.text(_one_of("status", new)))
        return
    op.drop_constraint(op.f(CHECK), "runs", type_="check")
    op.create_check_constraint(op.f(CHECK), "runs", sa.text(_one_of("status", new)))


def upgrade() -> None:
    _replace_status_check(OLD_RUN_STATUSES, NEW_RUN_STATUSES)
    op.create_table(
        "trial_rungs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("experiment_id", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("rung", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"],
            name=op.f("fk_trial_rungs_experiment_id_experiments"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_trial_rungs_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trial_rungs")),
        sa.UniqueConstraint("run_id", "rung", name=op.f("uq_trial_rungs_run_id_rung")),
    )  # fmt: skip
    op.create_index(op.f("ix_trial_rungs_experiment_id"), "trial_rungs", ["experiment_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_trial_rungs_experiment_id"), table_name="trial_rungs")
    op.drop_table("trial_rungs")
    # A paused trial has nothing of its own to resume to without the search: cancel it.
    op.execute(
        sa.text(
            "UPDATE runs SET status = 'cancelled', "
            "error = 'cancelled: adaptive searches were removed (downgrade)' "
            "WHERE status = 'paused'"
        )
    )
    _replace_status_check(NEW_RUN_STATUSES, OLD_RUN_STATUSES)
