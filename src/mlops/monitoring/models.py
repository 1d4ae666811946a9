"""ORM models of the monitoring domain: the prediction log and the ground truth reported for it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Uuid
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
