from __future__ import annotations

import optuna
import pytest
from pydantic import ValidationError
from sklearn.datasets import load_diabetes, load_iris

from mlops.training.catalogue import CATALOGUE, CatalogueError, Task, resolve
from mlops.training.search import (
    Validation,
    check_metric,
    make_objective,
    make_pruner,
    make_sampler,
)
from mlops.training.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_catalogue_covers_the_required_estimators_with_valid_defaults() -> None:
    required = {
        "logistic_regression",
        "ridge",
        "random_forest",
        "gradient_boosting",
        "hist_gradient_boosting",
        "svm",
        "k_nearest_neighbours",
    }
    assert required <= set(CATALOGUE)
    for name, spec in CATALOGUE.items():
        for task in spec.classes:
            chosen_spec, space = resolve(name, task, None)
            assert space is spec.default_space and chosen_spec is spec
            assert spec.build(task, {}) is not None


@pytest.mark.parametrize(
    ("estimator", "task", "space", "field"),
    [
        ("teleport", Task.CLASSIFICATION, None, "estimator"),
        ("logistic_regression", Task.REGRESSION, None, "estimator"),
        (
            "ridge",
            Task.REGRESSION,
            {"depth": {"type": "int", "low": 1, "high": 3}},
            "search_space.depth",
        ),
    ],
)
def test_resolve_names_the_bad_field(
    estimator: str, task: Task, space: dict | None, field: str
) -> None:
    with pytest.raises(CatalogueError) as error:
        resolve(estimator, task, SearchSpace.model_validate(space) if space else None)
    assert error.value.field == field


@pytest.mark.parametrize(
    "bad",
    [
        {"x": {"type": "int", "low": 5, "high": 1}},
        {"x": {"type": "float", "low": 0, "high": 1, "log": True}},
        {"x": {"type": "categorical", "choices": []}},
        {"x": {"type": "quantum", "low": 0, "high": 1}},
        {"x": {"type": "int", "low": 1, "high": 2, "colour": "red"}},
    ],
)
def test_bad_search_spaces_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        SearchSpace.model_validate(bad)


def test_unknown_metric_is_refused() -> None:
    check_metric("roc_auc")
    with pytest.raises(CatalogueError) as error:
        check_metric("vibes")
    assert error.value.field == "metric"


def test_a_seeded_study_is_reproducible_and_reports_each_fold_but_the_last() -> None:
    x, y = load_iris(return_X_y=True, as_frame=True)
    space = SearchSpace.model_validate(
        {
            "n_estimators": {"type": "int", "low": 10, "high": 30},
            "max_depth": {"type": "int", "low": 2, "high": 4},
            "max_features": {"type": "categorical", "choices": ["sqrt", "log2"]},
        }
    )
    spec, space = resolve("random_forest", Task.CLASSIFICATION, space)

    def search() -> optuna.Study:
        study = optuna.create_study(
            direction="maximize", sampler=make_sampler("tpe", 7), pruner=make_pruner("none")
        )
        objective = make_objective(
            spec, Task.CLASSIFICATION, space, x, y, "accuracy", Validation(cv_folds=3, seed=7)
        )
        study.optimize(objective, n_trials=4)
        return study

    first, second = search(), search()
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert [t.value for t in first.trials] == [t.value for t in second.trials]
    assert first.best_params == second.best_params
    assert 10 <= first.best_params["n_estimators"] <= 30
    assert first.best_value > 0.85
    # the last fold's running score is the trial's value: not reported again
    assert all(sorted(trial.intermediate_values) == [0, 1] for trial in first.trials)


def test_pruning_stops_poor_configurations_early() -> None:
    x, y = load_diabetes(return_X_y=True, as_frame=True)
    spec, _ = resolve("k_nearest_neighbours", Task.REGRESSION, None)
    space = SearchSpace.model_validate({"n_neighbors": {"type": "int", "low": 1, "high": 60}})
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler("random", 3), pruner=make_pruner("median")
    )
    objective = make_objective(spec, Task.REGRESSION, space, x, y, "r2", Validation(cv_folds=5))
    study.optimize(objective, n_trials=20)
    states = [trial.state for trial in study.trials]
    assert optuna.trial.TrialState.PRUNED in states
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all(len(t.intermediate_values) < 4 for t in pruned)


def test_estimators_are_seeded_when_they_take_a_random_state() -> None:
    spec, _ = resolve("random_forest", Task.CLASSIFICATION, None)
    assert spec.build(Task.CLASSIFICATION, {}, seed=5).random_state == 5
    assert spec.build(Task.CLASSIFICATION, {"random_state": 9}, seed=5).random_state == 9
    knn, _ = resolve("k_nearest_neighbours", Task.CLASSIFICATION, None)
    knn.build(Task.CLASSIFICATION, {}, seed=5)  # takes no random_state: nothing added


def test_holdout_validation_uses_one_split() -> None:
    x, y = load_iris(return_X_y=True, as_frame=True)
    spec, space = resolve("logistic_regression", Task.CLASSIFICATION, None)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", 1))
    study.optimize(
        make_objective(
            spec, Task.CLASSIFICATION, space, x, y, "accuracy", Validation(holdout=0.25)
        ),
        n_trials=2,
    )
    assert all(trial.intermediate_values == {} for trial in study.trials)
    assert all(trial.value is not None for trial in study.trials)
