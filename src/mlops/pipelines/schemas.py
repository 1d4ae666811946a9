"""Request and response bodies of the pipelines API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlops.pipelines.spec import PipelineSpec
from mlops.pipelines.states import RunStatus, StepStatus


class BackendOut(BaseModel):
    name: str = Field(examples=["kubernetes"])
    summary: str
    default: bool = Field(description="Pipelines that name no backend run here.")
    configured: bool = Field(description="Pipelines may name it (its settings block is set).")
    healthy: bool = Field(description="It can run steps now, as far as a probe can tell.")
    detail: str = Field(examples=["namespace mlops at https://10.0.0.1:6443"])


class PipelineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    description: str
    latest_version: int
    schedule: dict[str, Any] | None
    schedule_paused: bool
    next_fire_at: datetime | None
    created_at: datetime
    updated_at: datetime


class PipelineApplied(PipelineOut):
    version: int = Field(description="The version this definition is stored as.")
    created: bool = Field(description="False when the definition equals the latest version.")


class PipelineVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    digest: str
    created_by: str
    created_at: datetime
    spec: PipelineSpec


class RunCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"params": {"min_rows": 200}}]}
    )

    params: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(default=None, ge=1, description="Default: the latest version.")


class StepRunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    type: str
    status: StepStatus
    attempts: int
    max_attempts: int
    depends_on: list[str]
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    outputs: dict[str, Any] | None
    error: str | None
    cached_from: uuid.UUID | None


class RunSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    pipeline_name: str
    version: int
    backend: str
    external_id: str | None = Field(
        default=None,
        description="The run's id on a whole-run backend, e.g. Airflow's DAG id/DAG run id.",
    )
    status: RunStatus
    params: dict[str, Any]
    trigger: str
    created_by: str
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RunOut(RunSummary):
    steps: list[StepRunOut]


class ScheduleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paused: bool
