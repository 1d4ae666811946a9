"""load_dataset / save_dataset: files, sklearn:// and the artifact store; readable errors."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest

from mlops.steps.artifacts import ArtifactStore
from mlops.steps.datasets import SKLEARN_DATASETS, load_dataset, save_dataset
from mlops.steps.framework import StepError


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"x": [1.5, 2.0, None], "city": ["Oslo", "Lima", "Pune"], "target": [0, 1, 0]}
    )


@pytest.mark.parametrize(
    ("name", "rows"),
    [("iris", 150), ("wine", 178), ("breast_cancer", 569), ("diabetes", 442), ("digits", 1797)],
)
def test_sklearn_datasets_have_a_target(name: str, rows: int) -> None:
    df = load_dataset(f"sklearn://{name}")
    assert len(df) == rows
    assert "target" in df.columns
    assert all(isinstance(column, str) for column in df.columns)
    assert name in SKLEARN_DATASETS


def test_unknown_sklearn_dataset_lists_the_choices() -> None:
    with pytest.raises(StepError, match="iris") as caught:
        load_dataset("sklearn://titanic")
    assert "titanic" in str(caught.value)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_round_trips_by_path_and_file_uri(
    tmp_path: Path, frame: pd.DataFrame, suffix: str
) -> None:
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    for uri in (str(path), f"file://{path}"):
        loaded = load_dataset(uri)
        pd.testing.assert_frame_equal(loaded, frame, check_dtype=False)


@pytest.mark.parametrize("root", ["local", "memory"])
def test_artifact_store_round_trip(tmp_path: Path, frame: pd.DataFrame, root: str) -> None:
    store = ArtifactStore(
        str(tmp_path / "art") if root == "local" else f"memory://ds-{uuid.uuid4().hex}"
    )
    uri = save_dataset(frame, store.uri_for("r", "s", "dataset.parquet"), store)
    pd.testing.assert_frame_equal(load_dataset(uri, store), frame)
    csv_uri = store.put_bytes(
        store.uri_for("r", "s", "raw.csv"), frame.to_csv(index=False).encode()
    )
    pd.testing.assert_frame_equal(load_dataset(csv_uri, store), frame, check_dtype=False)


def test_unknown_scheme_names_the_supported_ones() -> None:
    with pytest.raises(StepError) as caught:
        load_dataset("https://example.com/data.csv")
    message = str(caught.value)
    assert "'https'" in message
    assert "file://" in message and "sklearn://" in message


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(StepError, match="not found") as caught:
        load_dataset(str(missing))
    assert str(missing) in str(caught.value)


def test_corrupt_file_names_the_path(tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"this is not parquet")
    with pytest.raises(StepError, match="cannot read parquet") as caught:
        load_dataset(str(broken))
    assert str(broken) in str(caught.value)


def test_unsupported_format_is_refused(tmp_path: Path) -> None:
    sheet = tmp_path / "data.xlsx"
    sheet.write_bytes(b"x")
    with pytest.raises(StepError, match=r"\.csv, \.parquet"):
        load_dataset(str(sheet))


def test_missing_artifact_is_a_step_error(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    with pytest.raises(StepError, match="not found"):
        load_dataset(store.uri_for("r", "s", "gone.parquet"), store)
