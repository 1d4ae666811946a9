"""Monitoring: alert channels, rules (with their state) and the history of their transitions.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mlops.core.database import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alert_channels",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_channels")),
        sa.UniqueConstraint("name", name=op.f("uq_alert_channels_name")),
    )
    with op.batch_alter_table("alert_channels", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_channels_kind"), ["kind"])
        batch_op.create_index(batch_op.f("ix_alert_channels_created_at"), ["created_at"])
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("variant", sa.String(length=63), nullable=True),
        sa.Column("figure", sa.String(length=200), nullable=False),
        sa.Column("condition", sa.String(length=2), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("window_minutes", sa.Integer(), nullable=False),
        sa.Column("for_minutes", sa.Integer(), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_since", UTCDateTime(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("last_value", sa.Float(), nullable=True),
        sa.Column("last_evaluated_at", UTCDateTime(), nullable=True),
        sa.Column("no_data_since", UTCDateTime(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_alert_rules_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rules")),
        sa.UniqueConstraint("name", name=op.f("uq_alert_rules_name")),
    )
    with op.batch_alter_table("alert_rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_rules_deployment_id"), ["deployment_id"])
        batch_op.create_index(batch_op.f("ix_alert_rules_severity"), ["severity"])
        batch_op.create_index(batch_op.f("ix_alert_rules_enabled"), ["enabled"])
        batch_op.create_index(batch_op.f("ix_alert_rules_created_at"), ["created_at"])
        batch_op.create_index(batch_op.f("ix_alert_rules_state"), ["state"])
    op.create_table(
        "alert_rule_channels",
        sa.Column("rule_id", sa.Uuid(), nullable=False),
        sa.Column("channel_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["alert_rules.id"],
            name=op.f("fk_alert_rule_channels_rule_id_alert_rules"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["alert_channels.id"],
            name=op.f("fk_alert_rule_channels_channel_id_alert_channels"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("rule_id", "channel_id", name=op.f("pk_alert_rule_channels")),
    )
    with op.batch_alter_table("alert_rule_channels", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_rule_channels_channel_id"), ["channel_id"])
    op.create_table(
        "alert_events",
        sa.Column("id", EVENT_ID, autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.Uuid(), nullable=True),
        sa.Column("rule", sa.String(length=63), nullable=False),
        sa.Column("deployment", sa.String(length=63), nullable=False),
        sa.Column("variant", sa.String(length=63), nullable=True),
        sa.Column("figure", sa.String(length=200), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("condition", sa.String(length=2), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("deliveries", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["alert_rules.id"],
            name=op.f("fk_alert_events_rule_id_alert_rules"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_events")),
    )
    with op.batch_alter_table("alert_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_events_rule_id"), ["rule_id"])
        batch_op.create_index(batch_op.f("ix_alert_events_rule"), ["rule"])
        batch_op.create_index(batch_op.f("ix_alert_events_created_at"), ["created_at"])


def downgrade() -> None:
    op.drop_table("alert_events")
    op.drop_table("alert_rule_channels")
    op.drop_table("alert_rules")
    op.drop_table("alert_channels")
