"""data_validation: every check runs, the report is an artifact, failures name the checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from mlops.steps.artifacts import ArtifactStore
from mlops.steps.framework import StepContext, StepError, artifact_digests, execute_step


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "art"))


def context(store: ArtifactStore, tmp_path: Path, run_id: str = "run-1") -> StepContext:
    return StepContext(run_id, "validate", 1, store, tmp_path / "work" / run_id)


@pytest.fixture
def dataset(tmp_path: Path) -> str:
    frame = pd.DataFrame(
        {
            "age": [23, 35, 41, 58, None],
            "income": [1200.0, 3400.5, 2800.0, 5100.0, 4000.0],
            "city": ["Oslo", "Lima", "Oslo", "Pune", "Lima"],
            "member": [True, False, True, True, False],
            "joined": pd.to_datetime(
                ["2020-01-01", "2021-05-02", None, "2022-03-04", "2023-01-01"]
            ),
            "id": [1, 2, 3, 4, 5],
        }
    )
    path = tmp_path / "people.parquet"
    frame.to_parquet(path, index=False)
    return str(path)


def _report(store: ArtifactStore, uri: str) -> dict[str, Any]:
    with store.open(uri) as handle:
        report: dict[str, Any] = json.load(handle)
    return report


def test_a_dataset_that_passes_every_check(
    store: ArtifactStore, tmp_path: Path, dataset: str
) -> None:
    params = {
        "dataset": dataset,
        "min_rows": 5,
        "max_rows": 10,
        "required_columns": ["age", "income", "city"],
        "max_null_fraction": {"age": 0.25, "income": 0.0},
        "ranges": {"age": {"min": 18, "max": 99}, "income": {"min": 0}},
        "allowed_values": {"city": ["Oslo", "Lima", "Pune"]},
        "dtypes": {"age": "numeric", "city": "string", "joined": "datetime", "member": "bool"},
        "unique": ["id"],
    }
    outputs = execute_step("data_validation", params, context(store, tmp_path))
    assert outputs["dataset"] == dataset
    assert outputs["rows"] == 5
    report = _report(store, outputs["report"])
    assert report["passed"] is True
    assert report["checks_failed"] == 0
    names = {check["check"] for check in report["checks"]}
    assert {"min_rows", "range[age]", "dtype[joined]", "unique[id]"} <= names
    age_range = next(c for c in report["checks"] if c["check"] == "range[age]")
    assert age_range["observed"]["min"] == 23 and age_range["observed"]["max"] == 58
    assert set(artifact_digests(outputs, store)) == {"report"}


def test_failing_checks_all_run_and_the_report_is_kept(
    store: ArtifactStore, tmp_path: Path, dataset: str
) -> None:
    params = {
        "dataset": dataset,
        "min_rows": 100,
        "required_columns": ["age", "salary"],
        "max_null_fraction": 0.1,
        "ranges": {"age": {"min": 30}, "city": {"max": 3}, "height": {"min": 0}},
        "allowed_values": {"city": ["Oslo"]},
        "dtypes": {"income": "string"},
        "unique": ["city"],
    }
    with pytest.raises(StepError) as caught:
        execute_step("data_validation", params, context(store, tmp_path))
    message = str(caught.value)
    report_uri = store.uri_for("run-1", "validate", "report.json")
    assert report_uri in message
    for name in ("min_rows", "required_columns", "range[age]", "allowed_values[city]"):
        assert name in message
    report = _report(store, report_uri)
    assert report["passed"] is False
    failed = set(report["failed"])
    assert failed == {
        "min_rows",
        "required_columns",
        "max_null_fraction[age]",
        "max_null_fraction[joined]",
        "range[age]",
        "range[city]",
        "range[height]",
        "allowed_values[city]",
        "dtype[income]",
        "unique[city]",
    }
    checks = {check["check"]: check for check in report["checks"]}
    assert checks["max_null_fraction[income]"]["passed"] is True  # every check ran
    assert checks["min_rows"]["observed"] == 5
    assert checks["required_columns"]["observed"] == {"missing": ["salary"]}
    assert checks["range[age]"]["observed"]["below_min"] == 1
    assert checks["allowed_values[city]"]["observed"]["unexpected_sample"] == ["Lima", "Pune"]
    assert checks["dtype[income]"]["observed"]["kind"] == "numeric"
    assert "missing" in checks["range[height]"]["detail"]


def test_the_report_is_deterministic(store: ArtifactStore, tmp_path: Path, dataset: str) -> None:
    digests = [
        artifact_digests(
            execute_step("data_validation", {"dataset": dataset}, context(store, tmp_path, run)),
            store,
        )["report"]
        for run in ("a", "b")
    ]
    assert digests[0] == digests[1]


def test_sklearn_dataset_and_artifact_input(store: ArtifactStore, tmp_path: Path) -> None:
    outputs = execute_step(
        "data_validation",
        {"dataset": "sklearn://iris", "required_columns": ["target"], "max_null_fraction": 0.0},
        context(store, tmp_path),
    )
    assert outputs["rows"] == 150


def test_a_missing_dataset_is_a_step_error(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(StepError, match="not found"):
        execute_step(
            "data_validation", {"dataset": str(tmp_path / "x.csv")}, context(store, tmp_path)
        )


@pytest.mark.parametrize(
    "params",
    [
        {"dataset": "d.csv", "max_null_fraction": 1.5},
        {"dataset": "d.csv", "max_null_fraction": {"a": -0.1}},
        {"dataset": "d.csv", "ranges": {"a": {"min": 5, "max": 1}}},
        {"dataset": "d.csv", "ranges": {"a": {}}},
        {"dataset": "d.csv", "dtypes": {"a": "complex"}},
        {"dataset": "d.csv", "min_rows": -1},
        {"dataset": "d.csv", "unknown": True},
        {"min_rows": 3},
    ],
)
def test_invalid_params_are_refused(
    params: dict[str, Any], store: ArtifactStore, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError):
        execute_step("data_validation", params, context(store, tmp_path))
