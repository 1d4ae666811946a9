"""Request and response bodies of the monitoring domain."""

from __future__ import annotations

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
