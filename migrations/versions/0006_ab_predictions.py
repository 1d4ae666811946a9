"""A/B tests: each prediction's variant and request key, and its outcome once reported.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mlops.core.database import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deployment_predictions",
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("variant", sa.String(length=63), nullable=False),
        sa.Column("request_key", sa.String(length=200), nullable=True),
        sa.Column("outcome", sa.Float(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("outcome_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_predictions_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_deployment_predictions")),
    )
    with op.batch_alter_table("deployment_predictions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deployment_predictions_deployment_id"), ["deployment_id"]
        )


def downgrade() -> None:
    op.drop_table("deployment_predictions")
