"""Multi-worker runs: ``runs.distribution``, the plan a run trains by.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 10:00:00+00:00

The batch and learning-rate arithmetic of a run across several workers
(:class:`core.training.distribution_plan.DistributionPlan`: replicas, scaling, global and
per-replica batch, learning-rate scale, data sharding, synchronised batch norm), recorded by
the service when the run is queued and by its chief worker, with the workers' addresses, when
an attempt starts. Null for one-worker runs and for runs recorded before this revision.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("distribution", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("distribution")
