"""ORM models of the monitoring domain: the prediction log, its ground truth, drift references
and reports."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from mlops.core.database import Base, UTCDateTime, utcnow

# SQLite gives an autoincrementing key only to a column typed exactly INTEGER
LogId = BigInteger().with_variant(Integer(), "sqlite")


class LoggedPrediction(Base):
    """One prediction request answered: its rows, what the model said, who answered, how fast."""

    __tablename__ = "prediction_log"
    __table_args__ = (Index("ix_prediction_log_deployment_time", "deployment_id", "created_at"),)

    id: Mapped[int] = mapped_column(LogId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    correlation_id: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE")
    )
    variant: Mapped[str] = mapped_column(String(63))
    model_version: Mapped[str] = mapped_column(String(32))
    # {"columns": [...], "rows": [[...], ...]}: the checked rows in the signature's order
    features: Mapped[dict[str, Any]] = mapped_column(JSON)
    predictions: Mapped[list[Any]] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Float)
    # why the model failed on rows that passed the signature (then ``predictions`` is empty)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class GroundTruth(Base):
    """The true outcome of a logged prediction (one value per row), reported later."""

    __tablename__ = "ground_truth"

    prediction_id: Mapped[int] = mapped_column(
        LogId, ForeignKey("prediction_log.id", ondelete="CASCADE"), primary_key=True
    )
    deployment_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    labels: Mapped[list[Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DriftReference(Base):
    """A deployment's reference profile, stored once; the newest is the one in use."""

    __tablename__ = "drift_references"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    source: Mapped[dict[str, Any]] = mapped_column(JSON)  # where the rows came from
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)  # thresholds, schedule, window
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)  # ReferenceProfile.to_dict()
    rows: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class DriftReportRecord(Base):
    """One comparison of a window of the prediction log with a reference."""

    __tablename__ = "drift_reports"
    __table_args__ = (Index("ix_drift_reports_deployment_time", "deployment_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE")
    )
    reference_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("drift_references.id", ondelete="CASCADE"), index=True
    )
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    trigger: Mapped[str] = mapped_column(String(16))
    dataset_drift: Mapped[bool] = mapped_column(Boolean)
    prediction_drift: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    drifted_count: Mapped[int] = mapped_column(Integer)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)  # DriftReport.to_dict()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# alerting's tables, so that import_all_models sees them
from mlops.monitoring.alerting import models as alerting_models  # noqa: E402, F401
