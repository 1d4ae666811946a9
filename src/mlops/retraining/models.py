"""ORM models of the retraining domain: policies, the retraining runs their triggers start,
and each run's lineage chain (trigger → pipeline run → training job → model version →
comparison → approval → rollout → outcome)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from mlops.core.database import Base, UTCDateTime, utcnow


class RetrainingPolicy(Base):
    """What guards a deployment's champion: when to retrain, how, and how to promote."""

    __tablename__ = "retraining_policies"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    deployment: Mapped[str] = mapped_column(String(63), index=True)
    # PolicyIn without its name: training, triggers, comparison, promotion, limits
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, index=True)
    # when each scheduled trigger last fired ({trigger index: ISO time}); the schedule's origin
    schedule_state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RetrainingEvent(Base):
    """One retraining: the pass of the loop a trigger started, and where it stands. The
    policy's name and deployment are copied: history outlives the policy (``policy_id`` is
    then null)."""

    __tablename__ = "retraining_events"
    __table_args__ = (
        Index("ix_retraining_events_policy_time", "policy_name", "created_at"),
        UniqueConstraint("actor", "idempotency_key"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    policy_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("retraining_policies.id", ondelete="SET NULL"), nullable=True, index=True
    )
    policy_name: Mapped[str] = mapped_column(String(63))
    deployment: Mapped[str] = mapped_column(String(63))
    model_name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(24), index=True)
    trigger: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str] = mapped_column(Text)  # why the trigger fired
    actor: Mapped[str] = mapped_column(String(120))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    training_job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    pipeline_run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    champion_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    challenger_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    comparison: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    rollout_variant: Mapped[str | None] = mapped_column(String(63), nullable=True)
    outcome_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the data window the pipeline trained on, and the holdout's: fixed when the trigger fires
    data_since: Mapped[datetime] = mapped_column(UTCDateTime)
    data_until: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    seconds_to_promotion: Mapped[float | None] = mapped_column(Float, nullable=True)


class RetrainingLink(Base):
    """One link of a run's lineage chain: a stage, when, by whom, and what it points at."""

    __tablename__ = "retraining_links"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    event_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("retraining_events.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(24))
    actor: Mapped[str] = mapped_column(String(120))
    ref: Mapped[str | None] = mapped_column(String(200), nullable=True)  # an id or a URI
    summary: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
