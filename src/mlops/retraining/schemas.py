"""Request and response bodies of the retraining domain."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlops.deployments.schemas import Strategy, StrategySettings
from mlops.monitoring.alerting.figures import QUALITY_METRICS
from mlops.pipelines.spec import ScheduleSpec
from mlops.training.spec import TrainingJobSpec

POLICY_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
LOWER_IS_BETTER = ("mae", "rmse")


class EventStatus(StrEnum):
    TRAINING = "training"  # the pipeline (a training job) is running
    COMPARING = "comparing"  # champion against challenger on the holdout
    AWAITING_APPROVAL = "awaiting_approval"
    ROLLING_OUT = "rolling_out"  # the deployment's strategy is moving traffic
    PROMOTED = "promoted"
    KEPT_CHAMPION = "kept_champion"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


IN_FLIGHT = (
    EventStatus.TRAINING,
    EventStatus.COMPARING,
    EventStatus.AWAITING_APPROVAL,
    EventStatus.ROLLING_OUT,
)


class TrainingTemplate(TrainingJobSpec):
    """The training job each retraining submits: the model is the deployment's, and without a
    ``dataset`` the job trains on the deployment's labelled requests of the data window (a
    ``labelled://`` URI, the holdout's rows left out)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "estimator": "logistic_regression",
                    "task": "classification",
                    "n_trials": 10,
                    "metric": "accuracy",
                    "cv_folds": 3,
                }
            ]
        },
    )

    dataset: str | None = Field(  # type: ignore[assignment]
        default=None,
        min_length=1,
        description="Any dataset URI; default: the deployment's labelled requests of the "
        "data window, less the holdout.",
    )

    @field_validator("model_name")
    @classmethod
    def _model_is_the_deployments(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("a retraining registers the deployment's model: leave it out")
        return value


def _quality_metric(value: str) -> str:
    if value not in QUALITY_METRICS:
        raise ValueError(f"unknown metric {value!r}; use one of {', '.join(QUALITY_METRICS)}")
    return value


class PerformanceTrigger(BaseModel):
    """The deployment's quality from monitoring (predictions joined with ground truth)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["performance_degradation"]
    metric: str = Field(default="accuracy", description=f"One of {', '.join(QUALITY_METRICS)}.")
    threshold: float | None = Field(
        default=None,
        description="Fire when the metric is worse than this (below it; above it for mae, rmse).",
    )
    max_relative_drop: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Fire when the metric is this much worse, relatively, than the champion's "
        "own evaluation (the metric recorded with its model version).",
    )
    window_hours: float = Field(default=24, gt=0, le=90 * 24)
    min_labelled: int = Field(default=100, ge=1, description="Labelled rows the window needs.")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return _quality_metric(value)

    @model_validator(mode="after")
    def _one_rule(self) -> PerformanceTrigger:
        if (self.threshold is None) == (self.max_relative_drop is None):
            raise ValueError("give exactly one of threshold and max_relative_drop")
        return self


class DriftTrigger(BaseModel):
    """Monitoring's drift decision, from the deployment's newest drift report."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["data_drift"]
    min_drifted_features: int | None = Field(default=None, ge=1)
    min_drifted_share: float | None = Field(default=None, gt=0, le=1)
    features: list[str] | None = Field(
        default=None, min_length=1, description="Fire when any of these features drifted."
    )
    max_report_age_hours: float = Field(
        default=24, gt=0, description="An older report is not news: it does not fire."
    )

    @model_validator(mode="after")
    def _one_rule(self) -> DriftTrigger:
        given = [
            name
            for name in ("features", "min_drifted_features", "min_drifted_share")
            if getattr(self, name) is not None
        ]
        if len(given) > 1:
            raise ValueError(f"give at most one of {', '.join(given)} (one rule per trigger)")
        return self

    @property
    def rule(self) -> str:
        if self.features:
            return f"any of {', '.join(self.features)} drifted"
        if self.min_drifted_features is not None:
            return f"at least {self.min_drifted_features} drifted feature(s)"
        if self.min_drifted_share is not None:
            return f"a drifted share of at least {self.min_drifted_share:g}"
        return "the report's dataset drift decision"


class ScheduleTrigger(ScheduleSpec):
    type: Literal["schedule"]


class VolumeTrigger(BaseModel):
    """New data since the last training."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["data_volume"]
    min_new_labelled_rows: int | None = Field(
        default=None, ge=1, description="Labelled rows of the deployment's requests."
    )
    feature_view: str | None = Field(default=None, description="Rows ingested into this view.")
    min_new_rows: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> VolumeTrigger:
        labelled = self.min_new_labelled_rows is not None
        view = self.feature_view is not None or self.min_new_rows is not None
        if labelled == view:
            raise ValueError("give min_new_labelled_rows, or feature_view with min_new_rows")
        if view and (self.feature_view is None or self.min_new_rows is None):
            raise ValueError("give feature_view with min_new_rows")
        return self


Trigger = Annotated[
    PerformanceTrigger | DriftTrigger | ScheduleTrigger | VolumeTrigger,
    Field(discriminator="type"),
]


class HoldoutSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["recent", "dataset"] = Field(
        default="recent",
        description="recent: a fixed share of the data window's labelled requests, kept out of "
        "training; dataset: a named dataset.",
    )
    share: float = Field(default=0.3, gt=0, lt=1)
    dataset: str | None = Field(default=None, min_length=1)
    label_column: str | None = Field(default=None, description="Default: the training target.")

    @model_validator(mode="after")
    def _dataset_named(self) -> HoldoutSpec:
        if (self.source == "dataset") != (self.dataset is not None):
            raise ValueError("a dataset holdout names its dataset, and only it does")
        return self


class ComparisonSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str = Field(default="accuracy", description=f"One of {', '.join(QUALITY_METRICS)}.")
    test: Literal["mcnemar", "bootstrap"] | None = Field(
        default=None,
        description="Default: McNemar's test for accuracy, a paired bootstrap otherwise.",
    )
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    min_rows: int = Field(default=100, ge=1)
    min_effect: float = Field(
        default=0.0, ge=0, description="The improvement the challenger must reach."
    )
    resamples: int = Field(default=2000, ge=100, le=100_000)
    holdout: HoldoutSpec = Field(default_factory=HoldoutSpec)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return _quality_metric(value)

    @model_validator(mode="after")
    def _mcnemar_is_for_accuracy(self) -> ComparisonSpec:
        if self.test == "mcnemar" and self.metric != "accuracy":
            raise ValueError("McNemar's test compares accuracy; use bootstrap for other metrics")
        return self

    @property
    def effective_test(self) -> str:
        return self.test or ("mcnemar" if self.metric == "accuracy" else "bootstrap")


class PromotionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["automatic", "approval"] = Field(
        default="automatic",
        description="automatic: roll the challenger out at once; approval: wait for "
        "POST .../approve or .../reject.",
    )
    strategy: Strategy = Strategy.CANARY
    settings: StrategySettings | None = Field(
        default=None, description="The strategy's settings; default: the deployment's."
    )


class PolicyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=2000)
    training: TrainingTemplate
    data_window_hours: float = Field(
        default=168,
        gt=0,
        le=365 * 24,
        description="The labelled requests of this many hours before the trigger are the "
        "training data and the holdout.",
    )
    triggers: list[Trigger] = Field(
        default_factory=list, max_length=20, description="None: manual only."
    )
    comparison: ComparisonSpec = Field(default_factory=ComparisonSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    cooldown_minutes: float = Field(
        default=60, ge=0, description="After a retraining starts, triggers wait this long."
    )
    max_runs_per_day: int = Field(default=4, ge=1, le=1000)

    @model_validator(mode="after")
    def _one_task(self) -> PolicyBody:
        regression = self.training.task.value == "regression"
        if regression and self.comparison.metric in ("accuracy", "precision", "recall", "f1"):
            raise ValueError(f"comparison.metric {self.comparison.metric} needs classification")
        return self


class PolicyIn(PolicyBody):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "churn-guard",
                    "deployment": "churn",
                    "training": {"estimator": "logistic_regression", "n_trials": 10},
                    "data_window_hours": 48,
                    "triggers": [
                        {"type": "data_drift", "min_drifted_features": 2},
                        {"type": "performance_degradation", "threshold": 0.8},
                        {"type": "schedule", "cron": "0 3 * * 1", "timezone": "Europe/Berlin"},
                    ],
                    "comparison": {"metric": "accuracy", "min_rows": 200, "min_effect": 0.01},
                    "promotion": {"mode": "automatic", "strategy": "canary"},
                    "cooldown_minutes": 360,
                    "max_runs_per_day": 2,
                }
            ]
        },
    )

    name: str = Field(pattern=POLICY_NAME_PATTERN, max_length=63)
    deployment: str = Field(min_length=1, max_length=63)
    enabled: bool = True


class PolicyPatch(BaseModel):
    """Replace any of a policy's parts; the rest stays."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"cooldown_minutes": 120, "max_runs_per_day": 1}]},
    )

    description: str | None = Field(default=None, max_length=2000)
    training: TrainingTemplate | None = None
    data_window_hours: float | None = Field(default=None, gt=0, le=365 * 24)
    triggers: list[Trigger] | None = Field(default=None, max_length=20)
    comparison: ComparisonSpec | None = None
    promotion: PromotionSpec | None = None
    cooldown_minutes: float | None = Field(default=None, ge=0)
    max_runs_per_day: int | None = Field(default=None, ge=1, le=1000)
    enabled: bool | None = None


class PolicyOut(PolicyBody):
    name: str
    deployment: str
    enabled: bool
    in_flight: uuid.UUID | None = Field(description="The retraining in progress, if any.")
    last_triggered_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class TriggerCheck(BaseModel):
    type: str
    index: int | None = Field(description="The trigger's position in the policy; manual: null.")
    fired: bool
    reason: str
    figures: dict[str, Any]


class EvaluationOut(BaseModel):
    policy: str
    would_start: bool = Field(description="A retraining would start now.")
    trigger: str | None = Field(description="The trigger that would start it.")
    blocked_by: str | None = Field(
        description="Why nothing would start although a trigger fires: disabled, in flight, "
        "cooldown or the daily maximum."
    )
    checks: list[TriggerCheck]
    evaluated_at: datetime


class ManualTrigger(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "new labels from the audit"}]}
    )

    reason: str = Field(default="", max_length=2000)


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000)


class LinkOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    stage: str = Field(
        description="trigger, pipeline_run, training_job, model_version, comparison, "
        "approval, rollout or outcome"
    )
    actor: str
    ref: str | None = Field(description="What the stage points at: an id, a version, a URI.")
    summary: str
    detail: dict[str, Any]
    created_at: datetime


class EventSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True, validate_by_name=True)

    id: uuid.UUID
    policy: str = Field(validation_alias="policy_name")
    deployment: str
    model_name: str
    status: EventStatus
    trigger: str
    reason: str
    actor: str
    training_job_id: uuid.UUID | None
    pipeline_run_id: uuid.UUID | None
    champion_version: str | None
    challenger_version: str | None
    outcome_reason: str | None
    data_since: datetime
    data_until: datetime
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    seconds_to_promotion: float | None


class EventOut(EventSummary):
    comparison: dict[str, Any] | None = Field(description="The champion/challenger report.")
    chain: list[LinkOut] = Field(description="The lineage, oldest first.")
