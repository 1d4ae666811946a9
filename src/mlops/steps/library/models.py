"""Model step types: ``evaluate`` (metrics on held-out data, gating the pipeline) and
``register_model`` (a new registry version, optionally with an alias)."""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlops.steps.datasets import load_dataset
from mlops.steps.framework import StepContext, StepError, StepType, register_step_type
from mlops.training import tracking
from mlops.training.spec import MODEL_NAME_PATTERN

_THRESHOLD = re.compile(r"^\s*([a-z0-9_]+)\s*(>=|<=|>|<)\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*$")
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse", "r2")


class EvaluateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_uri: str = Field(min_length=1, description="An MLflow model URI (runs:/, models:/).")
    dataset: str = Field(min_length=1, description="Held-out data with the target column.")
    target: str = "target"
    thresholds: list[str] = Field(
        default_factory=list,
        description="Gates like 'accuracy >= 0.9' or 'rmse < 3'; a miss fails the step.",
        examples=[["accuracy >= 0.9", "roc_auc >= 0.95"]],
    )

    @field_validator("thresholds")
    @classmethod
    def _parseable(cls, values: list[str]) -> list[str]:
        known = (*CLASSIFICATION_METRICS, *REGRESSION_METRICS)
        for value in values:
            match = _THRESHOLD.match(value)
            if not match:
                raise ValueError(f"{value!r} is not like 'accuracy >= 0.9'")
            if match.group(1) not in known:
                raise ValueError(f"unknown metric {match.group(1)!r}; known: {', '.join(known)}")
        return values


def compute_metrics(model: Any, features: Any, labels: Any) -> dict[str, float]:
    from sklearn import metrics
    from sklearn.base import is_classifier

    predicted = model.predict(features)
    if not is_classifier(model):
        return {
            "mae": float(metrics.mean_absolute_error(labels, predicted)),
            "rmse": float(math.sqrt(metrics.mean_squared_error(labels, predicted))),
            "r2": float(metrics.r2_score(labels, predicted)),
        }
    binary = len(set(labels)) <= 2
    average = "binary" if binary else "weighted"
    found = {
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
        "precision": float(
            metrics.precision_score(labels, predicted, average=average, zero_division=0)
        ),
        "recall": float(metrics.recall_score(labels, predicted, average=average, zero_division=0)),
        "f1": float(metrics.f1_score(labels, predicted, average=average, zero_division=0)),
    }
    if hasattr(model, "predict_proba"):
        scores = model.predict_proba(features)
        found["roc_auc"] = float(
            metrics.roc_auc_score(labels, scores[:, 1])
            if binary
            else metrics.roc_auc_score(labels, scores, multi_class="ovr")
        )
    return found


def check_thresholds(found: dict[str, float], thresholds: list[str]) -> list[str]:
    """The thresholds ``found`` misses, each with the figure (a metric not computed misses)."""
    misses = []
    for threshold in thresholds:
        match = _THRESHOLD.match(threshold)
        assert match is not None  # checked by the params model
        name, sign, bound = match.group(1), match.group(2), float(match.group(3))
        if name not in found:
            misses.append(f"{name} was not computed for this model (required {threshold})")
        elif not _COMPARE[sign](found[name], bound):
            misses.append(f"{name} = {found[name]:.4f}, required {threshold.strip()}")
    return misses


@register_step_type
class Evaluate(StepType):
    name: ClassVar[str] = "evaluate"
    Params: ClassVar[type[BaseModel]] = EvaluateParams
    outputs: ClassVar[tuple[str, ...]] = ("metrics", "passed", "report", "rows")
    description: ClassVar[str] = (
        "Score a logged model on held-out data (accuracy, precision, recall, F1, ROC AUC or "
        "MAE, RMSE, R²); thresholds like 'accuracy >= 0.9' gate the pipeline."
    )

    def run(self, context: StepContext, params: EvaluateParams) -> dict[str, Any]:
        import mlflow.sklearn

        frame = load_dataset(params.dataset, context.artifacts)
        if params.target not in frame.columns:
            raise StepError(f"target column {params.target!r} is not in {params.dataset}")
        if len(frame) == 0:
            raise StepError(f"{params.dataset} has no rows to evaluate on")
        tracking.use_store()
        try:
            model = mlflow.sklearn.load_model(params.model_uri)
        except Exception as exc:
            raise StepError(f"cannot load model {params.model_uri}: {exc}") from exc
        found = compute_metrics(model, frame.drop(columns=[params.target]), frame[params.target])
        misses = check_thresholds(found, params.thresholds)
        report = {
            "model_uri": params.model_uri,
            "rows": len(frame),
            "metrics": found,
            "thresholds": params.thresholds,
            "misses": misses,
        }
        uri = context.artifacts.put_bytes(
            context.output_uri("evaluation.json"), json.dumps(report, indent=2).encode()
        )
        figures = ", ".join(f"{name} = {value:.4f}" for name, value in found.items())
        print(f"evaluated on {len(frame)} rows: {figures}")
        if misses:
            raise StepError("evaluation gate failed: " + "; ".join(misses))
        return {"metrics": found, "passed": True, "report": uri, "rows": len(frame)}


class RegisterModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_uri: str = Field(min_length=1, description="An MLflow model URI (runs:/, models:/).")
    name: str = Field(pattern=MODEL_NAME_PATTERN, description="The registered model's name.")
    alias: str | None = Field(
        default=None, pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,62}$", description="e.g. challenger"
    )
    tags: dict[str, str] = Field(default_factory=dict)


@register_step_type
class RegisterModel(StepType):
    name: ClassVar[str] = "register_model"
    Params: ClassVar[type[BaseModel]] = RegisterModelParams
    outputs: ClassVar[tuple[str, ...]] = ("model_name", "model_version", "model_uri")
    description: ClassVar[str] = (
        "Register a logged model as a new version in the MLflow registry, with the lineage tags "
        "of the run that made it, and optionally point an alias at it."
    )

    def run(self, context: StepContext, params: RegisterModelParams) -> dict[str, Any]:
        tags = {**_lineage_tags(params.model_uri), tracking.TAG_RUN: context.run_id, **params.tags}
        version = tracking.register(params.model_uri, params.name, tags, params.alias)
        return {
            "model_name": params.name,
            "model_version": version,
            "model_uri": f"models:/{params.name}/{version}",
        }


def _lineage_tags(model_uri: str) -> dict[str, str]:
    """The ``mlops.*`` tags of the run that logged the model (job, dataset digest, metric)."""
    client = tracking.client()
    run_id = None
    if model_uri.startswith("runs:/"):
        run_id = model_uri.split("/")[1]
    elif model_uri.startswith("models:/m-"):
        run_id = client.get_logged_model(model_uri.removeprefix("models:/")).source_run_id
    if not run_id:
        return {}
    tags = client.get_run(run_id).data.tags
    return {key: value for key, value in tags.items() if key.startswith("mlops.")}
