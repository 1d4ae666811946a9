"""feature_engineering: numeric output with readable names, target carried, transformer saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.steps.artifacts import ArtifactStore
from mlops.steps.datasets import load_dataset
from mlops.steps.framework import StepContext, StepError, artifact_digests, execute_step
from mlops.steps.library.feature_engineering import load_transformer


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "art"))


@pytest.fixture
def dataset(tmp_path: Path) -> str:
    frame = pd.DataFrame(
        {
            "age": [20.0, None, 40.0, 60.0],
            "rooms": [1, 2, 3, 2],
            "color": ["red", None, "blue", "red"],
            "customer_id": ["a", "b", "c", "d"],
            "target": [0, 1, 0, 1],
        }
    )
    path = tmp_path / "houses.csv"
    frame.to_csv(path, index=False)
    return str(path)


def run(store: ArtifactStore, tmp_path: Path, params: dict[str, Any], run_id: str = "r1") -> Any:
    ctx = StepContext(run_id, "features", 1, store, tmp_path / "work" / run_id)
    return execute_step("feature_engineering", params, ctx)


def test_mixed_columns_become_numeric_features(
    store: ArtifactStore, tmp_path: Path, dataset: str
) -> None:
    outputs = run(store, tmp_path, {"dataset": dataset, "drop": ["customer_id"]})
    assert outputs["feature_names"] == ["age", "rooms", "color_blue", "color_red"]
    assert outputs["n_features"] == 4
    features = load_dataset(outputs["dataset"], store)
    assert list(features.columns) == [*outputs["feature_names"], "target"]
    assert features["target"].tolist() == [0, 1, 0, 1]
    matrix = features[outputs["feature_names"]]
    assert all(pd.api.types.is_float_dtype(matrix[c]) for c in matrix.columns)
    assert not matrix.isna().any().any()
    assert np.allclose(matrix["age"].mean(), 0.0) and np.allclose(matrix["rooms"].mean(), 0.0)
    assert matrix["color_red"].tolist() == [1.0, 1.0, 0.0, 1.0]  # None imputed as most frequent
    assert set(artifact_digests(outputs, store)) == {"dataset", "transformer"}

    transformer = load_transformer(outputs["transformer"], store)
    unseen = pd.DataFrame(
        {"age": [30.0], "rooms": [None], "color": ["green"], "customer_id": ["z"]}
    )
    transformed = transformer.transform(unseen)
    assert transformed.shape == (1, 4)
    assert transformed[0][2:].tolist() == [0.0, 0.0]  # unknown category: all zeros


def test_sklearn_dataset_minmax_and_ordinal(
    store: ArtifactStore, tmp_path: Path, dataset: str
) -> None:
    iris = run(store, tmp_path, {"dataset": "sklearn://iris", "scale": "minmax"})
    assert iris["n_features"] == 4
    frame = load_dataset(iris["dataset"], store)
    values = frame[iris["feature_names"]]
    assert values.min().min() == 0.0 and values.max().max() == 1.0
    assert sorted(frame["target"].unique().tolist()) == [0, 1, 2]

    ordinal = run(
        store,
        tmp_path,
        {
            "dataset": dataset,
            "numeric": ["age"],
            "categorical": ["color"],
            "one_hot": False,
            "scale": "none",
            "impute_numeric": "mean",
        },
        run_id="r2",
    )
    assert ordinal["feature_names"] == ["age", "color"]
    frame = load_dataset(ordinal["dataset"], store)
    assert frame["age"].tolist() == [20.0, 40.0, 40.0, 60.0]


def test_outputs_are_deterministic(store: ArtifactStore, tmp_path: Path, dataset: str) -> None:
    first = artifact_digests(run(store, tmp_path, {"dataset": dataset}, "a"), store)
    second = artifact_digests(run(store, tmp_path, {"dataset": dataset}, "b"), store)
    assert first == second


def test_no_target(store: ArtifactStore, tmp_path: Path) -> None:
    outputs = run(
        store, tmp_path, {"dataset": "sklearn://wine", "target": None, "drop": ["target"]}
    )
    assert "target" not in load_dataset(outputs["dataset"], store).columns
    assert outputs["n_features"] == 13


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"numeric": ["age", "height"]}, "not in the dataset"),
        ({"target": "price"}, "target column 'price'"),
        ({"numeric": ["age"], "categorical": ["age"]}, "both numeric and categorical"),
        ({"numeric": ["color"]}, "not numeric"),
        ({"numeric": ["target"]}, "target"),
        ({"numeric": [], "categorical": []}, "no feature columns"),
    ],
)
def test_bad_column_choices_are_step_errors(
    store: ArtifactStore, tmp_path: Path, dataset: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(StepError, match=message):
        run(store, tmp_path, {"dataset": dataset, **params})


def test_only_own_artifacts_are_unpickled(store: ArtifactStore, tmp_path: Path) -> None:
    foreign = tmp_path / "evil.joblib"
    foreign.write_bytes(b"not even a pickle")
    with pytest.raises(StepError, match="refusing"):
        load_transformer(f"file://{foreign}", store)
