"""Training against a real ``mlflow server`` (PostgreSQL backend, artifacts uploaded over HTTP)
from a real service process on PostgreSQL: a training job, and the end-to-end pipeline
data_validation → feature_engineering → train → evaluate → register_model, twice, with the
champion alias moved through the API; then the same pipeline on the embedded default stores."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlops.core.settings import OPTUNA_SCHEMA
from tests.conftest import ADMIN, _reset_state, base_settings, free_port
from tests.mlflow_server import mlflow_server_fixture  # noqa: F401  (mlflow_server)
from tests.processes import service_env, start_service, stop_service

pytestmark = pytest.mark.slow

FINAL = {"succeeded", "failed", "cancelled"}
JOB: dict[str, Any] = {
    "dataset": "sklearn://breast_cancer",
    "target": "target",
    "task": "classification",
    "estimator": "logistic_regression",
    "n_trials": 4,
    "metric": "accuracy",
    "cv_folds": 3,
    "sampler": {"type": "tpe", "seed": 7},
    "parallelism": 2,
    "model_name": "bc-server-logreg",
}
MODEL = "bc-pipeline"


def end_to_end(name: str, threshold: str, n_trials: int = 3) -> dict[str, Any]:
    """The pipeline of the issue, on sklearn's breast cancer data."""
    return {
        "name": name,
        "description": "validate, engineer features, search, gate on held-out data, register",
        "steps": [
            {
                "name": "validate",
                "type": "data_validation",
                "params": {"dataset": "sklearn://breast_cancer", "min_rows": 100},
            },
            {
                "name": "features",
                "type": "feature_engineering",
                "depends_on": ["validate"],
                "params": {"dataset": "{{ steps.validate.outputs.dataset }}"},
            },
            {
                "name": "train",
                "type": "train",
                "depends_on": ["features"],
                "params": {
                    "dataset": "{{ steps.features.outputs.dataset }}",
                    "target": "target",
                    "estimator": "logistic_regression",
                    "n_trials": n_trials,
                    "cv_folds": 3,
                    "sampler": {"type": "tpe", "seed": 7},
                },
            },
            {
                "name": "evaluate",
                "type": "evaluate",
                "depends_on": ["train"],
                "params": {
                    "model_uri": "{{ steps.train.outputs.model_uri }}",
                    "dataset": "{{ steps.train.outputs.test_dataset }}",
                    "target": "target",
                    "thresholds": [threshold],
                },
            },
            {
                "name": "register",
                "type": "register_model",
                "depends_on": ["evaluate"],
                "params": {"model_uri": "{{ steps.train.outputs.model_uri }}", "name": MODEL},
            },
        ],
    }


# ----------------------------------------------------------------------------- helpers


def wait_until(client: httpx.Client, path: str, timeout: float = 150) -> dict[str, Any]:
    """Poll a job or a pipeline run until it is final."""
    deadline = time.monotonic() + timeout
    while True:
        found = client.get(path).json()
        if found["status"] in FINAL:
            return dict(found)
        assert time.monotonic() < deadline, found
        time.sleep(0.2)


def run_pipeline(client: httpx.Client, name: str) -> str:
    response = client.post(f"/api/v1/pipelines/{name}/runs", json={"params": {}})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def apply(client: httpx.Client, spec: dict[str, Any]) -> None:
    response = client.post("/api/v1/pipelines", json=spec)
    assert response.status_code in (200, 201), response.text


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in run["steps"]}


def describe_failure(run: dict[str, Any]) -> str:
    return "; ".join(f"{s['name']}={s['status']}: {s.get('error')}" for s in run["steps"])


def reset_database(url: str, tmp: Path) -> None:
    """The session database may hold other tests' rows: start from empty tables."""
    settings = base_settings(tmp, database_url=url)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _reset_state(settings)).result()


@pytest.fixture
def tracking_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Point this process's MLflow fluent API at a store, for this test only (``models:/``
    URIs resolve through the registry URI)."""
    import mlflow

    def use(uri: str) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
        assert mlflow.get_tracking_uri() == uri and mlflow.get_registry_uri() == uri

    return use


@pytest.fixture(scope="module")
def service(
    postgres_url: str, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """A service process on the session's PostgreSQL, tracking in the MLflow server."""
    tmp = tmp_path_factory.mktemp("service-on-mlflow-server")
    reset_database(postgres_url, tmp / "reset")
    env = service_env(
        tmp / "data", MLOPS_DATABASE_URL=postgres_url, MLFLOW_TRACKING_URI=mlflow_server
    )
    env.pop("MLFLOW_REGISTRY_URI", None)
    port = free_port()
    process = start_service(env, port, tmp / "service.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=ADMIN, timeout=60) as client:
            yield client
    finally:
        stop_service(process)


# ----------------------------------------------------------------------------- the tests


@pytest.mark.postgres
def test_a_job_tracks_in_the_mlflow_server_and_searches_in_postgres(
    service: httpx.Client,
    mlflow_server: str,
    postgres_url: str,
    tracking_env: Callable[[str], None],
) -> None:
    import mlflow
    import optuna

    response = service.post("/api/v1/training/jobs", json=JOB)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    job = wait_until(service, f"/api/v1/training/jobs/{job_id}")
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["model_version"] == "1"
    assert 0.9 < result["best_value"] <= 1.0

    tracking = mlflow.MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    experiment = tracking.get_experiment(result["mlflow_experiment_id"])
    assert experiment.name == f"training-job-{job_id}"
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # uploads go over HTTP

    parent = tracking.get_run(result["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in parent.data.tags
    assert parent.data.params["estimator"] == "logistic_regression"
    assert parent.data.params["n_trials"] == "4"
    assert parent.data.metrics["best.accuracy"] == pytest.approx(result["best_value"])

    nested = tracking.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        max_results=100,
    )
    assert len(nested) == 4
    assert sorted(run.data.tags["optuna.trial"] for run in nested) == ["0", "1", "2", "3"]
    for run in nested:
        assert set(run.data.params) == {"C"}
        assert 0.5 < run.data.metrics["score"] <= 1.0
        assert run.info.status == "FINISHED"
    assert max(run.data.metrics["score"] for run in nested) == pytest.approx(result["best_value"])

    version = tracking.get_model_version(JOB["model_name"], "1")
    assert version.tags["mlops.job_id"] == job_id
    assert version.tags["mlops.dataset_digest"] == result["dataset_digest"]
    assert version.tags["mlops.metric"] == "accuracy"
    assert version.run_id == parent.info.run_id

    tracking_env(mlflow_server)
    info = mlflow.models.get_model_info(result["model_uri"])
    assert info.signature is not None
    assert len(info.signature.inputs.input_names()) == 30
    assert info.saved_input_example_info is not None
    example = mlflow.models.Model.load(result["model_uri"]).load_input_example()
    assert example is not None and len(example) == 5

    storage = optuna.storages.RDBStorage(
        "postgresql+psycopg://"
        + postgres_url.split("://", 1)[1]
        + f"?options=-csearch_path%3D{OPTUNA_SCHEMA}"
    )
    try:
        study = optuna.load_study(study_name=f"job-{job_id}", storage=storage)
        finished = [trial for trial in study.trials if trial.state.is_finished()]
        assert len(finished) == 4
        assert study.best_value == pytest.approx(result["best_value"])
    finally:
        storage.engine.dispose()


@pytest.mark.postgres
def test_the_end_to_end_pipeline_registers_gates_and_serves_the_champion(
    service: httpx.Client, mlflow_server: str, tracking_env: Callable[[str], None]
) -> None:
    import mlflow.pyfunc
    import pandas as pd

    apply(service, end_to_end("bc-e2e", "accuracy >= 0.9"))
    apply(service, end_to_end("bc-e2e-strict", "accuracy >= 0.9999", n_trials=2))

    first = wait_until(service, f"/api/v1/pipelines/runs/{run_pipeline(service, 'bc-e2e')}")
    assert first["status"] == "succeeded", describe_failure(first)
    registered = steps_of(first)["register"]["outputs"]
    assert registered == {
        "model_name": MODEL,
        "model_version": "1",
        "model_uri": f"models:/{MODEL}/1",
    }
    evaluated = steps_of(first)["evaluate"]["outputs"]
    assert evaluated["passed"] is True and evaluated["metrics"]["accuracy"] >= 0.9
    assert evaluated["rows"] == 114  # the 20 % kept out of the search

    # The second run, and the gated one beside it: only the second registers.
    second_id = run_pipeline(service, "bc-e2e")
    strict_id = run_pipeline(service, "bc-e2e-strict")
    second = wait_until(service, f"/api/v1/pipelines/runs/{second_id}")
    strict = wait_until(service, f"/api/v1/pipelines/runs/{strict_id}")
    assert second["status"] == "succeeded", describe_failure(second)
    assert steps_of(second)["register"]["outputs"]["model_version"] == "2"

    assert strict["status"] == "failed"
    gated = steps_of(strict)
    assert gated["train"]["status"] == "succeeded"
    assert gated["evaluate"]["status"] == "failed"
    assert re.search(
        r"accuracy = 0\.\d{4}, required accuracy >= 0\.9999", gated["evaluate"]["error"]
    ), gated["evaluate"]["error"]
    assert gated["register"]["status"] == "skipped"

    tracking = mlflow.MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    versions = tracking.search_model_versions(f"name = '{MODEL}'")
    assert sorted(v.version for v in versions) == ["1", "2"]
    lineage = tracking.get_model_version(MODEL, "2").tags
    assert lineage["mlops.pipeline_run_id"] == second_id
    assert lineage["mlops.dataset_digest"] == steps_of(second)["train"]["outputs"]["dataset_digest"]

    moved = service.post(
        f"/api/v1/training/models/{MODEL}/aliases", json={"alias": "champion", "version": "2"}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["version"] == "2" and moved.json()["aliases"] == ["champion"]
    listed = service.get(f"/api/v1/training/models/{MODEL}/versions").json()
    assert listed["total"] == 2, listed
    assert {item["version"]: item["aliases"] for item in listed["items"]} == {
        "2": ["champion"],
        "1": [],
    }
    assert service.get(f"/api/v1/training/models/{MODEL}").json()["aliases"] == {"champion": "2"}
    assert tracking.get_model_version_by_alias(MODEL, "champion").version == "2"

    tracking_env(mlflow_server)
    held_out = steps_of(second)["train"]["outputs"]["test_dataset"]
    features = pd.read_parquet(held_out).drop(columns=["target"])  # a file of the service's
    champion = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    pinned = mlflow.pyfunc.load_model(f"models:/{MODEL}/2")
    predicted = pd.Series(champion.predict(features))
    assert predicted.tolist() == pd.Series(pinned.predict(features)).tolist()
    assert len(predicted) == 114 and predicted.nunique() == 2


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")  # MLflow's
def test_the_end_to_end_pipeline_on_the_embedded_stores(tmp_path: Path) -> None:
    """No MLflow server and no PostgreSQL: SQLite for the service, Optuna and MLflow."""
    import mlflow

    env = service_env(tmp_path / "data")
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(variable, None)
    port = free_port()
    process = start_service(env, port, tmp_path / "service.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=ADMIN, timeout=60) as client:
            apply(client, end_to_end("bc-e2e", "accuracy >= 0.9"))
            run = wait_until(client, f"/api/v1/pipelines/runs/{run_pipeline(client, 'bc-e2e')}")
            assert run["status"] == "succeeded", describe_failure(run)
            assert steps_of(run)["register"]["outputs"]["model_version"] == "1"
            versions = client.get(f"/api/v1/training/models/{MODEL}/versions").json()
            assert [item["version"] for item in versions["items"]] == ["1"]
    finally:
        stop_service(process)

    local = f"sqlite:///{(tmp_path / 'data' / 'mlflow' / 'mlflow.db').resolve().as_posix()}"
    tracking = mlflow.MlflowClient(tracking_uri=local, registry_uri=local)
    version = tracking.get_model_version(MODEL, "1")
    assert version.tags["mlops.pipeline_run_id"] == run["id"]
    assert (tmp_path / "data" / "optuna.db").exists()
