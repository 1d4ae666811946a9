"""ORM models of the deployment domain: deployments, their model variants, and their history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from mlops.core.database import Base, UTCDateTime, utcnow


class Deployment(Base):
    """One endpoint: the variants that answer its predictions and how traffic is split."""

    __tablename__ = "deployments"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    model_name: Mapped[str] = mapped_column(String(128), index=True)
    strategy: Mapped[str] = mapped_column(String(16))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)  # the strategy's settings
    # requests carrying entity keys are completed with this feature service's online values
    feature_service: Mapped[str | None] = mapped_column(String(63), nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    # The rollout in progress, if any: its target variant, step and when the next step is due.
    rollout: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeploymentVariant(Base):
    """One model version behind a deployment, with its share of the traffic (0 to 100)."""

    __tablename__ = "deployment_variants"
    __table_args__ = (UniqueConstraint("deployment_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(32))
    requested_as: Mapped[str] = mapped_column(String(160))  # "3" or "@champion"
    weight: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(16), index=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    # A replaced variant may stay loaded for an instant rollback until then.
    keep_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DeploymentEvent(Base):
    """Every change of a deployment: what, why and who, in order."""

    __tablename__ = "deployment_events"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(120))
    weights: Mapped[dict[str, float]] = mapped_column(JSON)  # the split after the event
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class PredictionRecord(Base):
    """A prediction of an A/B test: which variant answered whom, and the outcome reported later."""

    __tablename__ = "deployment_predictions"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    variant: Mapped[str] = mapped_column(String(63))
    request_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    outcome: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    outcome_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
