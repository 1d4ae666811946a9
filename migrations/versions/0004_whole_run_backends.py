"""Runs handed whole to another orchestrator (Airflow, Kubeflow, Vertex AI): its id for the run,
and whether the service still has to stop it there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("external_id", sa.String(length=400), nullable=True))
        batch_op.add_column(
            sa.Column(
                "external_cancel_pending", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.drop_column("external_cancel_pending")
        batch_op.drop_column("external_id")
