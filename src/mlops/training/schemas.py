"""Response bodies of the training API (the request body is ``TrainingJobSpec``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlops.pipelines.states import RunStatus


class Progress(BaseModel):
    trials_total: int
    trials_finished: int = Field(description="Complete, pruned or failed trials.")
    trials_complete: int
    trials_pruned: int
    trials_failed: int
    trials_running: int
    best_value: float | None
    elapsed_seconds: float | None
    estimated_seconds_left: float | None = Field(
        description="From the mean time per finished trial and the job's parallelism."
    )


class JobSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: RunStatus
    estimator: str
    model_name: str | None
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    pipeline_run_id: uuid.UUID


class JobResult(BaseModel):
    best_value: float | None = None
    best_params: dict[str, Any] | None = None
    best_trial: int | None = None
    model_uri: str | None = Field(default=None, description="The logged model (models:/m-…).")
    model_version: str | None = None
    registered_model_uri: str | None = Field(default=None, description="models:/NAME/VERSION")
    mlflow_experiment_id: str | None = None
    mlflow_parent_run_id: str | None = None
    dataset_digest: str | None = None


class JobOut(JobSummary):
    spec: dict[str, Any]
    metric: str
    direction: str
    progress: Progress | None = Field(description="Null until the study exists.")
    result: JobResult


class TrialOut(BaseModel):
    number: int
    state: str = Field(description="running, complete, pruned or fail")
    value: float | None
    params: dict[str, Any]
    intermediate_values: dict[int, float] = Field(description="Running score after each fold.")
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None


class EstimatorOut(BaseModel):
    name: str
    tasks: list[str]
    default_search_space: dict[str, Any]


class ModelVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    version: str
    aliases: list[str]
    status: str | None
    source: str | None
    run_id: str | None
    tags: dict[str, str]
    created_at: datetime | None


class RegisteredModelOut(BaseModel):
    name: str
    description: str | None
    aliases: dict[str, str] = Field(description="{alias: version}")
    latest_version: str | None
    tags: dict[str, str]
    created_at: datetime | None
    updated_at: datetime | None


class AliasUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"alias": "champion", "version": "2"}]}
    )

    alias: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,62}$", description="e.g. champion")
    version: str = Field(pattern=r"^[0-9]+$", description="The version the alias points at.")
