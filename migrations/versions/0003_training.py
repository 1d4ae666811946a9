"""Training jobs; on Postgres, the schema that holds Optuna's studies.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mlops.core.database import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("estimator", sa.String(length=63), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=True),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_digest", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pipeline_runs.id"],
            name=op.f("fk_training_jobs_run_id_pipeline_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_jobs")),
        sa.UniqueConstraint("run_id", name=op.f("uq_training_jobs_run_id")),
        sa.UniqueConstraint(
            "created_by", "idempotency_key", name=op.f("uq_training_jobs_created_by")
        ),
    )
    with op.batch_alter_table("training_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_training_jobs_created_at"), ["created_at"])
        batch_op.create_index(batch_op.f("ix_training_jobs_model_name"), ["model_name"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SCHEMA IF NOT EXISTS optuna")


def downgrade() -> None:
    with op.batch_alter_table("training_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_training_jobs_model_name"))
        batch_op.drop_index(batch_op.f("ix_training_jobs_created_at"))
    op.drop_table("training_jobs")
