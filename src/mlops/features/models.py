"""ORM models of the feature store: definitions, the offline store's batches, materializations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from mlops.core.database import Base, UTCDateTime, utcnow


class FeatureEntity(Base):
    """What features describe, and the columns that identify it."""

    __tablename__ = "feature_entities"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    join_keys: Mapped[list[dict[str, str]]] = mapped_column(JSON)  # [{"name", "type"}]
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FeatureViewVersion(Base):
    """One version of a feature view. Compatible changes update the newest version in place;
    a breaking change is a new version, with rows of its own."""

    __tablename__ = "feature_views"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(63), index=True)
    version: Mapped[int] = mapped_column(Integer)
    # FeatureViewIn without name and version: entities, features, source, ttl, timestamps, ...
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    # the join keys of its entities, in order, as they were when this version was written
    join_keys: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FeatureServiceRecord(Base):
    """A named set of features from several views: the unit a model consumes."""

    __tablename__ = "feature_services"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)  # FeatureServiceIn
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FeatureBatch(Base):
    """One ingested batch of a view version's rows: a Parquet file in the offline store. A
    file is part of the store only once its batch is committed."""

    __tablename__ = "feature_batches"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    view_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("feature_views.id", ondelete="CASCADE"), index=True
    )
    path: Mapped[str] = mapped_column(String(500))  # relative to the offline store's root
    origin: Mapped[str] = mapped_column(String(16))  # rows | file | source
    rows: Mapped[int] = mapped_column(Integer)
    min_event_at: Mapped[datetime] = mapped_column(UTCDateTime)
    max_event_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    validation: Mapped[dict[str, Any]] = mapped_column(JSON)  # validation.report(...)
    # set once its rows are in the online store (incremental materialization takes the rest)
    materialized_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class FeatureMaterialization(Base):
    """One finished materialization of a view version into the online store."""

    __tablename__ = "feature_materializations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    view_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("feature_views.id", ondelete="CASCADE"), index=True
    )
    mode: Mapped[str] = mapped_column(String(16))  # range | incremental
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # succeeded | failed
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    entities_written: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_by: Mapped[str] = mapped_column(String(120))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
