"""Monitoring: the prediction log and the ground truth reported for it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mlops.core.database import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "prediction_log",
        sa.Column("id", LOG_ID, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("correlation_id", sa.String(length=200), nullable=True),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("variant", sa.String(length=63), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("predictions", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_prediction_log_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_log")),
    )
    with op.batch_alter_table("prediction_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prediction_log_request_id"), ["request_id"])
        batch_op.create_index(batch_op.f("ix_prediction_log_correlation_id"), ["correlation_id"])
        batch_op.create_index(batch_op.f("ix_prediction_log_created_at"), ["created_at"])
        batch_op.create_index("ix_prediction_log_deployment_time", ["deployment_id", "created_at"])
    op.create_table(
        "ground_truth",
        sa.Column("prediction_id", LOG_ID, nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["prediction_id"],
            ["prediction_log.id"],
            name=op.f("fk_ground_truth_prediction_id_prediction_log"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("prediction_id", name=op.f("pk_ground_truth")),
    )
    with op.batch_alter_table("ground_truth", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ground_truth_deployment_id"), ["deployment_id"])


def downgrade() -> None:
    op.drop_table("ground_truth")
    op.drop_table("prediction_log")
