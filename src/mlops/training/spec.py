"""The training job file: the public contract of ``POST /api/v1/training/jobs`` and the CLI.

Everything that can be known without reading the data is checked here, so that a bad job is a
422 naming the field, not a failed job an hour later.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from mlops.training.catalogue import CatalogueError, EstimatorSpec, Task, resolve
from mlops.training.search import Validation, check_metric
from mlops.training.space import Categorical, SearchSpace

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class SamplerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["tpe", "random"] = "tpe"
    seed: int | None = Field(default=42, description="Seeded by default: a job reproduces.")


class PrunerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["median", "hyperband", "none"] = "median"


class TrainingJobSpec(BaseModel):
    """One hyperparameter search, its tracking and (optionally) the model version it registers."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset": "sklearn://breast_cancer",
                    "target": "target",
                    "task": "classification",
                    "estimator": "random_forest",
                    "search_space": {
                        "n_estimators": {"type": "int", "low": 50, "high": 300},
                        "max_depth": {"type": "int", "low": 2, "high": 16},
                        "max_features": {"type": "categorical", "choices": ["sqrt", "log2"]},
                    },
                    "n_trials": 30,
                    "timeout_seconds": 600,
                    "metric": "accuracy",
                    "direction": "maximize",
                    "cv_folds": 5,
                    "sampler": {"type": "tpe", "seed": 42},
                    "pruner": {"type": "median"},
                    "parallelism": 2,
                    "model_name": "breast-cancer-rf",
                }
            ]
        },
    )

    dataset: str = Field(min_length=1, description="Any dataset URI the step library reads.")
    target: str = Field(default="target", min_length=1, description="The label column.")
    feature_columns: list[str] | None = Field(
        default=None,
        min_length=1,
        description="The columns to train on; default: every column but the target. Name them "
        "when the dataset carries other columns, such as a features:// training set's join "
        "keys and timestamps.",
    )
    task: Task = Task.CLASSIFICATION
    estimator: str = Field(description="A name from GET /api/v1/training/estimators.")
    search_space: SearchSpace | None = Field(
        default=None, description="{parameter: dimension}; default: the estimator's own."
    )
    n_trials: int = Field(default=20, ge=1, le=10_000)
    timeout_seconds: float = Field(
        default=3600, gt=0, le=7 * 86_400, description="No new trial starts after this."
    )
    metric: str | None = Field(
        default=None, description="A scikit-learn scorer; default accuracy or r2 by task."
    )
    direction: Literal["maximize", "minimize"] = "maximize"
    cv_folds: int | None = Field(default=None, ge=2, le=20)
    holdout: float | None = Field(default=None, gt=0, lt=1)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    parallelism: int = Field(default=1, ge=1, le=16, description="Worker processes per job.")
    model_name: str | None = Field(
        default=None,
        pattern=MODEL_NAME_PATTERN,
        description="Register the refitted best model under this name.",
    )

    @field_validator("holdout")
    @classmethod
    def _one_validation(cls, holdout: float | None, info: ValidationInfo) -> float | None:
        if holdout is not None and info.data.get("cv_folds") is not None:
            raise ValueError("give cv_folds or holdout, not both")
        return holdout

    @property
    def effective_metric(self) -> str:
        if self.metric:
            return self.metric
        return "accuracy" if self.task is Task.CLASSIFICATION else "r2"

    @property
    def validation(self) -> Validation:
        seed = self.sampler.seed if self.sampler.seed is not None else 42
        if self.holdout is not None:
            return Validation(cv_folds=None, holdout=self.holdout, seed=seed)
        return Validation(cv_folds=self.cv_folds or 5, seed=seed)

    def resolved(self) -> tuple[EstimatorSpec, SearchSpace]:
        """The estimator and search space; raises ``CatalogueError`` naming the bad field."""
        check_metric(self.effective_metric)
        estimator, space = resolve(self.estimator, self.task, self.search_space)
        check_space_values(estimator, self.task, space)
        return estimator, space


def check_space_values(estimator: EstimatorSpec, task: Task, space: SearchSpace) -> None:
    """Every bound and choice is a value the estimator accepts (scikit-learn's own checks)."""
    from sklearn.utils._param_validation import InvalidParameterError

    cls = estimator.estimator_class(task)
    for name, dimension in space.parameters.items():
        candidates: list[Any] = (
            list(dimension.choices)
            if isinstance(dimension, Categorical)
            else [dimension.low, dimension.high]
        )
        for value in candidates:
            try:
                cls(**{**estimator.fixed, name: value})._validate_params()
            except InvalidParameterError as exc:
                raise CatalogueError(f"search_space.{name}", str(exc)) from None
