"""Feature store: entities, feature view versions, feature services, offline batches and
materializations; a deployment's feature service.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mlops.core.database import UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feature_entities",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("join_keys", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature_entities")),
        sa.UniqueConstraint("name", name=op.f("uq_feature_entities_name")),
    )
    op.create_table(
        "feature_services",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature_services")),
        sa.UniqueConstraint("name", name=op.f("uq_feature_services_name")),
    )
    op.create_table(
        "feature_views",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("join_keys", sa.JSON(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature_views")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_feature_views_name")),
    )
    with op.batch_alter_table("feature_views", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feature_views_name"), ["name"], unique=False)

    op.create_table(
        "feature_batches",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("view_id", sa.Uuid(), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("min_event_at", UTCDateTime(), nullable=False),
        sa.Column("max_event_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("validation", sa.JSON(), nullable=False),
        sa.Column("materialized_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["view_id"],
            ["feature_views.id"],
            name=op.f("fk_feature_batches_view_id_feature_views"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature_batches")),
    )
    with op.batch_alter_table("feature_batches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_feature_batches_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_feature_batches_view_id"), ["view_id"], unique=False)

    op.create_table(
        "feature_materializations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("view_id", sa.Uuid(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("start_at", UTCDateTime(), nullable=True),
        sa.Column("end_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("rows_read", sa.Integer(), nullable=False),
        sa.Column("entities_written", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("validation", sa.JSON(), nullable=True),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["view_id"],
            ["feature_views.id"],
            name=op.f("fk_feature_materializations_view_id_feature_views"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature_materializations")),
    )
    with op.batch_alter_table("feature_materializations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_feature_materializations_finished_at"), ["finished_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_feature_materializations_status"), ["status"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_feature_materializations_view_id"), ["view_id"], unique=False
        )
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feature_service", sa.String(length=63), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("feature_service")
    with op.batch_alter_table("feature_materializations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feature_materializations_view_id"))
        batch_op.drop_index(batch_op.f("ix_feature_materializations_status"))
        batch_op.drop_index(batch_op.f("ix_feature_materializations_finished_at"))

    op.drop_table("feature_materializations")
    with op.batch_alter_table("feature_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feature_batches_view_id"))
        batch_op.drop_index(batch_op.f("ix_feature_batches_created_at"))

    op.drop_table("feature_batches")
    with op.batch_alter_table("feature_views", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feature_views_name"))

    op.drop_table("feature_views")
    op.drop_table("feature_services")
    op.drop_table("feature_entities")
