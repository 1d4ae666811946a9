"""Request and response bodies of the monitoring domain."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_GROUND_TRUTH_ITEMS = 10_000
MAX_UNMATCHED_LISTED = 100


class GroundTruthItem(BaseModel):
    """The truth for one logged prediction (by its request id) or for every prediction
    logged under a correlation id: ``label`` for a one-row request, else ``labels``, one per
    row in the request's order."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(default=None, min_length=1, max_length=64)
    correlation_id: str | None = Field(default=None, min_length=1, max_length=200)
    label: bool | int | float | str | None = None
    labels: list[bool | int | float | str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_key_one_truth(self) -> GroundTruthItem:
        if (self.request_id is None) == (self.correlation_id is None):
            raise ValueError("give exactly one of request_id and correlation_id")
        if (self.label is None) == (self.labels is None):
            raise ValueError("give exactly one of label and labels")
        return self

    @property
    def values(self) -> list[Any]:
        return self.labels if self.labels is not None else [self.label]


class GroundTruthIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"request_id": "9f1c2e…", "label": 1},
                        {"correlation_id": "order-1841", "labels": [0, 1]},
                    ]
                }
            ]
        },
    )

    items: list[GroundTruthItem] = Field(min_length=1, max_length=MAX_GROUND_TRUTH_ITEMS)


class GroundTruthAccepted(BaseModel):
    items: int = Field(description="Items received.")
    matched: int = Field(description="Items that matched logged predictions.")
    predictions_labelled: int = Field(description="Logged predictions given their truth.")
    unmatched: list[str] = Field(
        description=f"Ids that matched no logged prediction (the first {MAX_UNMATCHED_LISTED})."
    )


class LoggedPredictionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    request_id: str
    correlation_id: str | None
    variant: str
    model_version: str
    features: dict[str, Any]
    predictions: list[Any]
    latency_ms: float
    error: str | None = Field(description="Why the model failed (then no predictions).")
    created_at: datetime
    labels: list[Any] | None = None


class VariantQuality(BaseModel):
    variant: str
    model_versions: list[str]
    predictions: int = Field(description="Rows predicted in the window.")
    labelled: int = Field(description="Of those, rows with their truth reported.")
    task: Literal["classification", "regression"] | None
    metrics: dict[str, float | None]
    notes: list[str]


class QualityOut(BaseModel):
    deployment: str
    since: datetime
    until: datetime
    variants: list[VariantQuality]
    overall: VariantQuality | None = Field(description="Every variant's rows together.")


# --------------------------------------------------------------------------- drift


class WindowSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime
    until: datetime


class DatasetSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=1, description="file://, a local path, sklearn://NAME, …")
    exclude: list[str] = Field(default_factory=list, description="Columns not profiled.")
    label_column: str | None = Field(
        default=None,
        description="Profiled as the reference of the predictions (prediction drift).",
    )


class ReferenceSource(BaseModel):
    """Exactly one: a window of the prediction log, or a dataset (the training data)."""

    model_config = ConfigDict(extra="forbid")

    window: WindowSource | None = None
    dataset: DatasetSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ReferenceSource:
        if (self.window is None) == (self.dataset is None):
            raise ValueError("give exactly one of window and dataset")
        return self


class DriftSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thresholds: dict[str, Any] | None = Field(
        default=None,
        description='Overrides of the defaults, e.g. {"features": {"age": {"psi": 0.3}}}.',
    )
    check_every_minutes: int | None = Field(
        default=None, ge=1, le=10_080, description="Scheduled checks; none unless given."
    )
    window_minutes: int = Field(
        default=60, ge=1, le=43_200, description="The window a check covers, up to its time."
    )


class ReferenceIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "source": {
                        "dataset": {"uri": "sklearn://breast_cancer", "exclude": ["target"]}
                    },
                    "settings": {"check_every_minutes": 60, "window_minutes": 60},
                }
            ]
        },
    )

    source: ReferenceSource
    settings: DriftSettings = Field(default_factory=DriftSettings)


class ProfiledFeature(BaseModel):
    name: str
    kind: str
    role: str


class ReferenceOut(BaseModel):
    id: uuid.UUID
    deployment: str
    source: dict[str, Any]
    settings: dict[str, Any]
    rows: int
    features: list[ProfiledFeature]
    created_by: str
    created_at: datetime


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime | None = Field(default=None, description="Default: until minus window_minutes.")
    until: datetime | None = Field(default=None, description="Default: now.")


class ReportSummary(BaseModel):
    id: uuid.UUID
    deployment: str
    reference_id: uuid.UUID
    since: datetime
    until: datetime
    trigger: Literal["on_demand", "schedule"]
    dataset_drift: bool
    prediction_drift: bool | None
    drifted_count: int
    created_at: datetime


class DriftReportOut(ReportSummary):
    drifted_features: list[str]
    drifted_share: float
    feature_count: int
    reference_rows: int
    current_rows: int
    thresholds: dict[str, Any]
    window_cut: bool = Field(
        default=False, description="The window held more requests than are read: the newest."
    )
    features: list[dict[str, Any]] = Field(
        description="Per feature: figures, decision, reason, reference and current histograms."
    )
