"""Champion against challenger with real registered models (MLflow, SQLite store): the paired
bootstrap for ROC AUC (from the models' probabilities) and RMSE (lower is better), McNemar for
accuracy, too few rows, and a version that cannot be loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.retraining.evaluation import EvaluationError, compare_versions
from mlops.retraining.schemas import ComparisonSpec
from tests.model_registry import tracking_at

FEATURES = ["a", "b", "c"]


def frame(n: int, seed: int, task: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    data = pd.DataFrame(x, columns=FEATURES)
    if task == "classification":
        data["target"] = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 0.3, n) > 0).astype(int)
    else:
        data["target"] = 3 * x[:, 0] - 2 * x[:, 1] + rng.normal(0, 0.5, n)
    return data


def register(uri: str, name: str, model: Any, train: pd.DataFrame) -> str:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    features = train[FEATURES]
    model.fit(features, train["target"])
    with tracking_at(uri), mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(features.head(5), model.predict(features.head(5))),
            input_example=features.head(3),
            serialization_format="cloudpickle",
            pip_requirements=[],
        )
        return str(mlflow.register_model(info.model_uri, name).version)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"


def test_roc_auc_by_paired_bootstrap_from_probabilities(store: str) -> None:
    from sklearn.linear_model import LogisticRegression

    train = frame(400, 1, "classification")
    weak = register(store, "m", LogisticRegression(), train[["c", "target"]].assign(a=0.0, b=0.0))
    strong = register(store, "m", LogisticRegression(), train)
    holdout = frame(300, 2, "classification")
    spec = ComparisonSpec(metric="roc_auc", min_rows=100, resamples=500)
    report = compare_versions(store, "m", weak, strong, holdout, "target", spec, "classification")
    assert report["test"] == "bootstrap"
    figures = report["bootstrap"]
    # probabilities, not labels: a strong logistic model's AUC is far above its accuracy-like 0.5
    assert figures["challenger"] > 0.9 and figures["champion"] < 0.7
    low, high = figures["interval"]
    assert 0 < low <= figures["difference"] <= high
    assert report["decision"] == "challenger_better" and report["significant"] is True
    assert report["champion"]["metrics"]["accuracy"] < report["challenger"]["metrics"]["accuracy"]

    # the other way round: the champion is better, the challenger is kept out
    reverse = compare_versions(store, "m", strong, weak, holdout, "target", spec, "classification")
    assert reverse["decision"] == "keep_champion"
    assert reverse["improvement"] < 0


def test_rmse_lower_is_better_and_the_minimum_effect(store: str) -> None:
    from sklearn.dummy import DummyRegressor
    from sklearn.linear_model import Ridge

    train = frame(400, 3, "regression")
    mean = register(store, "r", DummyRegressor(), train)
    ridge = register(store, "r", Ridge(), train)
    holdout = frame(200, 4, "regression")
    spec = ComparisonSpec(metric="rmse", min_rows=50, resamples=500)
    report = compare_versions(store, "r", mean, ridge, holdout, "target", spec, "regression")
    figures = report["bootstrap"]
    assert figures["challenger"] < figures["champion"]  # RMSE: lower is better
    assert figures["interval"][1] < 0  # the difference (challenger - champion) is below zero
    assert report["improvement"] == pytest.approx(figures["champion"] - figures["challenger"])
    assert report["decision"] == "challenger_better"
    assert set(report["challenger"]["metrics"]) >= {"mae", "rmse", "r2"}

    demanding = spec.model_copy(update={"min_effect": 100.0})
    kept = compare_versions(store, "r", mean, ridge, holdout, "target", demanding, "regression")
    assert kept["decision"] == "keep_champion" and "below the minimum" in kept["reason"]


def test_mcnemar_too_few_rows_and_a_missing_version(store: str) -> None:
    from sklearn.linear_model import LogisticRegression

    train = frame(300, 5, "classification")
    first = register(store, "c", LogisticRegression(), train)
    holdout = frame(40, 6, "classification")
    spec = ComparisonSpec(metric="accuracy", min_rows=100)
    report = compare_versions(store, "c", first, first, holdout, "target", spec, "classification")
    assert report["test"] == "mcnemar" and report["rows"] == 40
    assert report["decision"] == "insufficient_data"
    assert "fewer than 100" in report["reason"]

    with pytest.raises(EvaluationError, match="Model 'c' has no version 9"):
        compare_versions(store, "c", first, "9", holdout, "target", spec, "classification")
    with pytest.raises(EvaluationError, match="no label column"):
        compare_versions(store, "c", first, first, holdout, "y", spec, "classification")
