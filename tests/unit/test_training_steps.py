"""Pure logic of the training steps: the job file's checks, the data checks, evaluation gates."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlops.steps.framework import StepError
from mlops.steps.library.models import (
    EvaluateParams,
    check_thresholds,
    compute_metrics,
)
from mlops.training.catalogue import CatalogueError, Task
from mlops.training.runner import ATTR_WORKER, dataset_digest, fail_abandoned_trials, split_frame
from mlops.training.spec import TrainingJobSpec


def test_the_issue_job_file_is_accepted_with_defaults_filled() -> None:
    spec = TrainingJobSpec.model_validate(TrainingJobSpec.model_json_schema()["examples"][0])
    estimator, space = spec.resolved()
    assert estimator.name == "random_forest"
    assert set(space.parameters) == {"n_estimators", "max_depth", "max_features"}
    assert spec.validation.cv_folds == 5 and spec.validation.seed == 42
    defaulted = TrainingJobSpec(dataset="sklearn://diabetes", estimator="ridge", task="regression")
    assert defaulted.effective_metric == "r2"
    assert defaulted.validation.cv_folds == 5 and defaulted.sampler.type == "tpe"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"estimator": "nope"}, "estimator"),
        ({"metric": "nope"}, "metric"),
        ({"search_space": {"C": {"type": "float", "low": -1.0, "high": 1.0}}}, "search_space.C"),
        (
            {"search_space": {"tol": {"type": "float", "low": -1.0, "high": 1.0}}},
            "search_space.tol",
        ),
    ],
)
def test_catalogue_problems_name_their_field(change: dict[str, object], field: str) -> None:
    spec = TrainingJobSpec.model_validate(
        {"dataset": "sklearn://iris", "estimator": "logistic_regression", **change}
    )
    with pytest.raises(CatalogueError) as caught:
        spec.resolved()
    assert caught.value.field == field


def test_a_log_float_range_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        TrainingJobSpec.model_validate(
            {
                "dataset": "sklearn://iris",
                "estimator": "svm",
                "search_space": {"C": {"type": "log-float", "low": 0, "high": 1}},
            }
        )


def test_split_frame_explains_bad_data() -> None:
    frame = load_iris(as_frame=True).frame
    data = split_frame(frame, "target", Task.CLASSIFICATION, "iris")
    assert data.features.shape == (150, 4) and data.digest == dataset_digest(frame)
    problems = [
        (frame, "label", "is not in iris"),
        (frame.iloc[:0], "target", "has no rows"),
        (frame.assign(kind="x"), "target", "not numeric"),
        (frame.assign(target=0), "target", "at least two classes"),
        (frame.assign(target=[i * 0.5 for i in range(150)]), "target", "looks continuous"),
        (frame.assign(target=[None] + [1.0] * 149), "target", "empty values"),
    ]
    for bad, target, words in problems:
        with pytest.raises(StepError, match=words):
            split_frame(bad, target, Task.CLASSIFICATION, "iris")


def test_the_digest_follows_the_content() -> None:
    frame = load_iris(as_frame=True).frame
    changed = frame.copy()
    changed.iloc[3, 0] += 0.1
    assert dataset_digest(frame) == dataset_digest(frame.copy())
    assert dataset_digest(frame) != dataset_digest(changed)


def test_evaluation_metrics_and_gates() -> None:
    iris = load_iris(as_frame=True).frame
    binary = iris[iris.target < 2]
    features, labels = binary.drop(columns="target"), binary.target
    model = LogisticRegression(max_iter=500).fit(features, labels)
    found = compute_metrics(model, features, labels)
    assert set(found) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    assert found["accuracy"] == 1.0
    assert check_thresholds(found, ["accuracy >= 0.9", "roc_auc > 0.5"]) == []
    misses = check_thresholds(found, ["accuracy < 0.5", "rmse < 1"])
    assert misses[0] == "accuracy = 1.0000, required accuracy < 0.5"
    assert "rmse was not computed" in misses[1]
    regression = LinearRegression().fit(features, iris.loc[binary.index, "petal width (cm)"])
    assert set(compute_metrics(regression, features, binary["petal width (cm)"])) == {
        "mae",
        "rmse",
        "r2",
    }


def test_thresholds_are_checked_when_the_pipeline_is_applied() -> None:
    params = {"model_uri": "runs:/x/model", "dataset": "sklearn://iris"}
    EvaluateParams.model_validate({**params, "thresholds": ["f1>=0.8", "rmse < 2.5e-1"]})
    for bad in ["accuracy => 0.9", "precision >= high", "auc >= 0.9"]:
        with pytest.raises(ValidationError):
            EvaluateParams.model_validate({**params, "thresholds": [bad]})


def test_pandas_frames_keep_their_column_names() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "target": [0, 1, 0, 1]})
    assert list(split_frame(frame, "target", Task.CLASSIFICATION, "x").features.columns) == ["a"]


def test_a_retried_worker_fails_only_the_trials_it_left_running() -> None:
    study = optuna.create_study()
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    left = {}
    for worker in (0, 1, None):  # None: died before it could sign the trial
        trial = study.ask()
        if worker is not None:
            trial.set_user_attr(ATTR_WORKER, worker)
        left[worker] = trial.number

    assert fail_abandoned_trials(study, 0) == [left[0]]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[0] == optuna.trial.TrialState.COMPLETE
    assert states[left[0]] == optuna.trial.TrialState.FAIL
    assert states[left[1]] == states[left[None]] == optuna.trial.TrialState.RUNNING

    assert sorted(fail_abandoned_trials(study)) == sorted([left[1], left[None]])
    assert {t.state for t in study.get_trials()} == {
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.FAIL,
    }


def test_the_median_pruner_reads_completed_trials_once_per_trial() -> None:
    from mlops.training.search import make_pruner

    study = optuna.create_study(direction="maximize")
    for curve in ([0.9, 0.9, 0.9], [0.8, 0.85, 0.9], [0.7, 0.8, 0.9], [0.6, 0.7, 0.8]):
        trial = study.ask()
        for step, value in enumerate(curve):
            trial.report(value, step)
        study.tell(trial, curve[-1])
    reads: list[object] = []
    get_trials = study.get_trials

    def counted(*args: object, **kwargs: object) -> list[optuna.trial.FrozenTrial]:
        reads.append(kwargs.get("states"))
        return get_trials(*args, **kwargs)  # type: ignore[arg-type]

    study.get_trials = counted  # type: ignore[method-assign]
    pruner, median = make_pruner("median"), optuna.pruners.MedianPruner(3, 1)
    decisions = []
    for curve in ([0.95, 0.96, 0.97], [0.5, 0.55, 0.6]):
        trial = study.ask()
        for step, value in enumerate(curve):
            trial.report(value, step)
            frozen = study._storage.get_trial(trial._trial_id)
            decisions.append((pruner.prune(study, frozen), median.prune(study, frozen)))
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert all(ours == optunas for ours, optunas in decisions), decisions
    assert {ours for ours, _ in decisions} == {True, False}, decisions
    # per trial: one read for ours, one per step for Optuna's
    assert len(reads) == 2 * (1 + 3), reads
