"""Retraining: policies, retrainings (events) and their lineage links.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mlops.core.database import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retraining_policies",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("deployment", sa.String(length=63), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("schedule_state", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retraining_policies")),
        sa.UniqueConstraint("name", name=op.f("uq_retraining_policies_name")),
    )
    with op.batch_alter_table("retraining_policies", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_retraining_policies_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_retraining_policies_deployment"), ["deployment"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_retraining_policies_enabled"), ["enabled"], unique=False
        )

    op.create_table(
        "retraining_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("policy_id", sa.Uuid(), nullable=True),
        sa.Column("policy_name", sa.String(length=63), nullable=False),
        sa.Column("deployment", sa.String(length=63), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("training_job_id", sa.Uuid(), nullable=True),
        sa.Column("pipeline_run_id", sa.Uuid(), nullable=True),
        sa.Column("champion_version", sa.String(length=32), nullable=True),
        sa.Column("challenger_version", sa.String(length=32), nullable=True),
        sa.Column("comparison", sa.JSON(), nullable=True),
        sa.Column("rollout_variant", sa.String(length=63), nullable=True),
        sa.Column("outcome_reason", sa.Text(), nullable=True),
        sa.Column("data_since", UTCDateTime(), nullable=False),
        sa.Column("data_until", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("seconds_to_promotion", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["retraining_policies.id"],
            name=op.f("fk_retraining_events_policy_id_retraining_policies"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retraining_events")),
        sa.UniqueConstraint("actor", "idempotency_key", name=op.f("uq_retraining_events_actor")),
    )
    with op.batch_alter_table("retraining_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_retraining_events_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_retraining_events_policy_id"), ["policy_id"], unique=False
        )
        batch_op.create_index(
            "ix_retraining_events_policy_time", ["policy_name", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_retraining_events_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_retraining_events_trigger"), ["trigger"], unique=False)

    op.create_table(
        "retraining_links",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=24), nullable=False),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["retraining_events.id"],
            name=op.f("fk_retraining_links_event_id_retraining_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retraining_links")),
    )
    with op.batch_alter_table("retraining_links", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_retraining_links_event_id"), ["event_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("retraining_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_retraining_links_event_id"))

    op.drop_table("retraining_links")
    with op.batch_alter_table("retraining_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_retraining_events_trigger"))
        batch_op.drop_index(batch_op.f("ix_retraining_events_status"))
        batch_op.drop_index("ix_retraining_events_policy_time")
        batch_op.drop_index(batch_op.f("ix_retraining_events_policy_id"))
        batch_op.drop_index(batch_op.f("ix_retraining_events_created_at"))

    op.drop_table("retraining_events")
    with op.batch_alter_table("retraining_policies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_retraining_policies_enabled"))
        batch_op.drop_index(batch_op.f("ix_retraining_policies_deployment"))
        batch_op.drop_index(batch_op.f("ix_retraining_policies_created_at"))

    op.drop_table("retraining_policies")
