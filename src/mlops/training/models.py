"""ORM model of the training domain: a job, run as a pipeline run of the system pipeline."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mlops.core.database import Base, UTCDateTime, utcnow
from mlops.pipelines.models import PipelineRun


class TrainingJob(Base):
    __tablename__ = "training_jobs"
    __table_args__ = (UniqueConstraint("created_by", "idempotency_key"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    estimator: Mapped[str] = mapped_column(String(63))
    model_name: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("pipeline_runs.id", ondelete="CASCADE"), unique=True
    )
    created_by: Mapped[str] = mapped_column(String(120))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    run: Mapped[PipelineRun] = relationship(lazy="joined", innerjoin=True)

    # A job's state is its run's: read through, never copied.
    @property
    def status(self) -> str:
        return self.run.status

    @property
    def started_at(self) -> datetime | None:
        return self.run.started_at

    @property
    def finished_at(self) -> datetime | None:
        return self.run.finished_at

    @property
    def error(self) -> str | None:
        return self.run.error

    @property
    def pipeline_run_id(self) -> uuid.UUID:
        return self.run_id
