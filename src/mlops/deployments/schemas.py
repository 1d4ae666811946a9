"""Request and response bodies of the deployment domain."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlops.features.schemas import NAME_PATTERN as FEATURE_SERVICE_PATTERN
from mlops.training.spec import MODEL_NAME_PATTERN

DEPLOYMENT_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class Strategy(StrEnum):
    DIRECT = "direct"
    BLUE_GREEN = "blue_green"
    CANARY = "canary"
    ROLLING = "rolling"
    AB_TEST = "ab_test"


class DeploymentState(StrEnum):
    DEPLOYING = "deploying"  # the first variant is loading
    READY = "ready"  # serving, no rollout in progress
    ROLLING_OUT = "rolling_out"  # a new variant is taking traffic step by step
    FAILED = "failed"  # the first variant never became healthy: nothing serves


class VariantStatus(StrEnum):
    LOADING = "loading"
    READY = "ready"  # loaded, warmed and smoke-tested; may take traffic
    STANDBY = "standby"  # replaced, kept loaded for an instant rollback
    FAILED = "failed"  # did not load or answer its smoke predictions: never takes traffic
    RETIRED = "retired"


class ModelRef(BaseModel):
    """A registered model and either a version or an alias."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=MODEL_NAME_PATTERN, max_length=128, examples=["breast-cancer-rf"])
    version: str | None = Field(default=None, pattern=r"^[0-9]{1,9}$", examples=["3"])
    alias: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$", examples=["champion"])

    @model_validator(mode="after")
    def _one_of_version_and_alias(self) -> ModelRef:
        if (self.version is None) == (self.alias is None):
            raise ValueError("give exactly one of version and alias")
        return self

    @property
    def requested_as(self) -> str:
        return self.version if self.version is not None else f"@{self.alias}"


class CanarySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[float] = Field(
        default_factory=lambda: [10.0, 25.0, 50.0, 100.0],
        min_length=1,
        max_length=20,
        description="The canary's traffic share (%) at each step, increasing, ending at 100.",
    )
    analysis_seconds: float = Field(
        default=60.0, gt=0, le=86_400, description="How long each step is watched."
    )
    max_error_rate_increase: float = Field(default=0.05, ge=0, le=1)
    max_latency_p95_ratio: float = Field(default=1.5, ge=1)
    max_latency_p95_increase_ms: float | None = Field(default=5.0, ge=0)
    min_requests: int = Field(
        default=50, ge=1, description="Canary requests a step needs before it can pass."
    )
    max_inconclusive_steps: int = Field(
        default=3,
        ge=0,
        description="Analysis windows a step may wait for min_requests before it rolls back.",
    )

    @model_validator(mode="after")
    def _increasing_to_100(self) -> CanarySettings:
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError("steps must increase")
        if not (self.steps[0] > 0 and self.steps[-1] == 100):
            raise ValueError("steps must lie in (0, 100] and end at 100")
        return self


class RollingSettings(BaseModel):
    """Traffic moved in equal batches; between batches the new variant's health is checked
    against the old one (the canary checks); a batch without traffic is not held back."""

    model_config = ConfigDict(extra="forbid")

    batches: int = Field(default=4, ge=2, le=20)
    batch_seconds: float = Field(default=30.0, gt=0, le=86_400)
    max_error_rate_increase: float = Field(default=0.05, ge=0, le=1)
    max_latency_p95_ratio: float = Field(default=2.0, ge=1)
    max_latency_p95_increase_ms: float | None = Field(default=10.0, ge=0)
    min_requests: int = Field(default=20, ge=1)

    @property
    def steps(self) -> list[float]:
        return [round(100 * batch / self.batches, 2) for batch in range(1, self.batches + 1)]


class AbTestSettings(BaseModel):
    """A fixed split until promote or rollback; each caller keeps its variant."""

    model_config = ConfigDict(extra="forbid")

    share: float = Field(default=50.0, gt=0, lt=100, description="The new variant's share (%).")
    key_header: str = Field(
        default="X-User-Id",
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="The header carrying the sticky key, when the body has no `key`.",
    )
    metric: Literal["rate", "mean"] = Field(
        default="rate",
        description="Outcomes are 0/1 (a two-proportion z-test) or numbers (Welch's t-test).",
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1)


class BlueGreenSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_previous_seconds: float = Field(
        default=600.0,
        ge=0,
        le=7 * 86_400,
        description="How long the replaced variant stays loaded for an instant rollback.",
    )


class StrategySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    canary: CanarySettings = Field(default_factory=CanarySettings)
    rolling: RollingSettings = Field(default_factory=RollingSettings)
    ab_test: AbTestSettings = Field(default_factory=AbTestSettings)
    blue_green: BlueGreenSettings = Field(default_factory=BlueGreenSettings)


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "bc",
                    "model": {"name": "breast-cancer-rf", "alias": "champion"},
                    "strategy": "canary",
                    "settings": {"canary": {"steps": [10, 50, 100], "analysis_seconds": 120}},
                }
            ]
        },
    )

    name: str = Field(pattern=DEPLOYMENT_NAME_PATTERN, max_length=63)
    model: ModelRef
    strategy: Strategy = Field(
        default=Strategy.DIRECT,
        description="How later versions roll out (the first one takes all traffic once healthy).",
    )
    settings: StrategySettings = Field(default_factory=StrategySettings)
    feature_service: str | None = Field(
        default=None,
        pattern=FEATURE_SERVICE_PATTERN,
        description="A feature service whose online values complete each request: instances "
        "then carry the entity's join keys (and any request-time columns), the service's "
        "features are added before the model sees them.",
    )


class DeploymentUpdate(BaseModel):
    """Roll a new model version out under the deployment's strategy (or the one given)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"model": {"name": "breast-cancer-rf", "version": "4"}}]},
    )

    model: ModelRef
    strategy: Strategy | None = None
    settings: StrategySettings | None = None


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000)


class VariantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    model_name: str
    model_version: str
    requested_as: str
    weight: float
    status: VariantStatus
    detail: str | None
    keep_until: datetime | None
    created_at: datetime


class DeploymentSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    model_name: str
    strategy: Strategy
    settings: dict[str, Any]
    feature_service: str | None
    state: DeploymentState
    rollout: dict[str, Any] | None
    error: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class DeploymentOut(DeploymentSummary):
    variants: list[VariantOut]


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    reason: str
    actor: str
    weights: dict[str, float]
    detail: dict[str, Any]
    created_at: datetime


class PredictRequest(BaseModel):
    """Either ``instances`` (records) or ``dataframe_split``; checked against the signature."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"instances": [{"mean radius": 14.1, "mean texture": 19.3}]}]
        },
    )

    instances: list[dict[str, Any]] | None = Field(default=None, min_length=1, max_length=10_000)
    dataframe_split: dict[str, Any] | None = None
    key: str | None = Field(
        default=None,
        max_length=200,
        description="Sticky assignment in an A/B test (a user id, say); else the header named "
        "in the test's settings.",
    )
    correlation_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,  # api.MAX_CORRELATION_ID, for the header too
        description="Your id for this request (an order, a session), kept in the prediction "
        "log so that ground truth can be reported by it; else the X-Correlation-Id header.",
    )


class PredictResponse(BaseModel):
    predictions: list[Any]
    variant: str
    model_version: str
    request_id: str


class Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=64)
    value: float = Field(description="1/0 for a conversion, or any number for a mean metric.")


class OutcomesIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"outcomes": [{"request_id": "3f2a…", "value": 1}]}]},
    )

    outcomes: list[Outcome] = Field(min_length=1, max_length=10_000)


class OutcomesAccepted(BaseModel):
    accepted: int
    unknown: list[str] = Field(description="Request ids with no recorded A/B prediction.")


class Comparison(BaseModel):
    difference: float | None
    confidence_interval: tuple[float, float] | None
    statistic: float | None
    p_value: float | None
    significant: bool | None


class VariantResult(BaseModel):
    name: str
    predictions: int
    outcomes: int
    value: float | None = Field(description="The rate or mean of the outcomes.")
    comparison: Comparison | None = Field(description="Against the control; None for it.")


class ExperimentOut(BaseModel):
    metric: Literal["rate", "mean"]
    test: str
    confidence: float
    control: str
    variants: list[VariantResult]
