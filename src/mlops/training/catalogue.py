"""The estimator catalogue: which scikit-learn estimators a job may name, for which tasks, and
the search space each one gets when the job gives none."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mlops.training.space import Categorical, FloatRange, IntRange, SearchSpace


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


@dataclass(frozen=True)
class EstimatorSpec:
    name: str
    classes: dict[Task, str]  # task -> "module:Class"
    default_space: SearchSpace
    fixed: dict[str, Any] = field(default_factory=dict)  # always passed, never searched
    scale_inputs: bool = False  # distance- or margin-based models want standardised features

    def estimator_class(self, task: Task) -> type[Any]:
        module, _, name = self.classes[task].partition(":")
        cls: type[Any] = getattr(importlib.import_module(module), name)
        return cls

    def parameter_names(self, task: Task) -> set[str]:
        return set(self.estimator_class(task)().get_params(deep=False))

    def build(self, task: Task, params: dict[str, Any], seed: int | None = None) -> Any:
        """The estimator with ``params``; seeded when it takes a ``random_state``, so that the
        same job on the same data gives the same scores."""
        values = {**self.fixed, **params}
        seedable = "random_state" in self.parameter_names(task)
        if seed is not None and seedable and "random_state" not in values:
            values["random_state"] = seed
        estimator = self.estimator_class(task)(**values)
        if not self.scale_inputs:
            return estimator
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), estimator)


_TREES = SearchSpace(
    {
        "n_estimators": IntRange(low=50, high=300),
        "max_depth": IntRange(low=2, high=16),
        "min_samples_leaf": IntRange(low=1, high=20),
        "max_features": Categorical(choices=["sqrt", "log2", None]),
    }
)

CATALOGUE: dict[str, EstimatorSpec] = {
    spec.name: spec
    for spec in (
        EstimatorSpec(
            "logistic_regression",
            {Task.CLASSIFICATION: "sklearn.linear_model:LogisticRegression"},
            SearchSpace({"C": FloatRange(low=1e-3, high=1e3, log=True)}),
            fixed={"max_iter": 2000},
            scale_inputs=True,
        ),
        EstimatorSpec(
            "ridge",
            {
                Task.REGRESSION: "sklearn.linear_model:Ridge",
                Task.CLASSIFICATION: "sklearn.linear_model:RidgeClassifier",
            },
            SearchSpace({"alpha": FloatRange(low=1e-3, high=1e3, log=True)}),
            scale_inputs=True,
        ),
        EstimatorSpec(
            "random_forest",
            {
                Task.CLASSIFICATION: "sklearn.ensemble:RandomForestClassifier",
                Task.REGRESSION: "sklearn.ensemble:RandomForestRegressor",
            },
            _TREES,
            fixed={"n_jobs": 1},
        ),
        EstimatorSpec(
            "gradient_boosting",
            {
                Task.CLASSIFICATION: "sklearn.ensemble:GradientBoostingClassifier",
                Task.REGRESSION: "sklearn.ensemble:GradientBoostingRegressor",
            },
            SearchSpace(
                {
                    "n_estimators": IntRange(low=50, high=300),
                    "learning_rate": FloatRange(low=1e-3, high=0.3, log=True),
                    "max_depth": IntRange(low=2, high=6),
                    "subsample": FloatRange(low=0.5, high=1.0),
                }
            ),
        ),
        EstimatorSpec(
            "hist_gradient_boosting",
            {
                Task.CLASSIFICATION: "sklearn.ensemble:HistGradientBoostingClassifier",
                Task.REGRESSION: "sklearn.ensemble:HistGradientBoostingRegressor",
            },
            SearchSpace(
                {
                    "learning_rate": FloatRange(low=1e-3, high=0.3, log=True),
                    "max_leaf_nodes": IntRange(low=8, high=64),
                    "l2_regularization": FloatRange(low=1e-6, high=10.0, log=True),
                }
            ),
        ),
        EstimatorSpec(
            "svm",
            {Task.CLASSIFICATION: "sklearn.svm:SVC", Task.REGRESSION: "sklearn.svm:SVR"},
            SearchSpace(
                {
                    "C": FloatRange(low=1e-2, high=1e3, log=True),
                    "gamma": FloatRange(low=1e-4, high=1.0, log=True),
                }
            ),
            scale_inputs=True,
        ),
        EstimatorSpec(
            "k_nearest_neighbours",
            {
                Task.CLASSIFICATION: "sklearn.neighbors:KNeighborsClassifier",
                Task.REGRESSION: "sklearn.neighbors:KNeighborsRegressor",
            },
            SearchSpace(
                {
                    "n_neighbors": IntRange(low=1, high=50),
                    "weights": Categorical(choices=["uniform", "distance"]),
                }
            ),
            scale_inputs=True,
        ),
    )
}


class CatalogueError(ValueError):
    """A job that names something the catalogue cannot give; ``field`` says which part."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def resolve(
    estimator: str, task: Task, space: SearchSpace | None
) -> tuple[EstimatorSpec, SearchSpace]:
    """The estimator and the search space a job will use, or ``CatalogueError`` naming why not."""
    spec = CATALOGUE.get(estimator)
    if spec is None:
        raise CatalogueError(
            "estimator", f"unknown estimator {estimator!r}; valid: {', '.join(sorted(CATALOGUE))}"
        )
    if task not in spec.classes:
        tasks = ", ".join(sorted(spec.classes))
        raise CatalogueError("estimator", f"{estimator} does not do {task}; it does: {tasks}")
    chosen = space if space is not None else spec.default_space
    known = spec.parameter_names(task)
    for name in chosen.parameters:
        if name not in known:
            raise CatalogueError(
                f"search_space.{name}",
                f"{estimator} has no parameter {name!r}; it has: {', '.join(sorted(known))}",
            )
    return spec, chosen
