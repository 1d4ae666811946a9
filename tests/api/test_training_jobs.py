"""Training jobs on the local backend: real worker processes, a real Optuna study in the
service's database and a real MLflow store (the embedded SQLite one)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from mlops.core.settings import Settings
from mlops.training.stores import open_tracking
from tests.conftest import ADMIN


def mlflow_client(settings: Settings) -> Any:
    return open_tracking(settings.effective_mlflow_uri)


FINAL = {"succeeded", "failed", "cancelled"}
SMALL_JOB: dict[str, Any] = {
    "dataset": "sklearn://breast_cancer",
    "target": "target",
    "task": "classification",
    "estimator": "logistic_regression",
    "n_trials": 4,
    "metric": "accuracy",
    "cv_folds": 3,
    "sampler": {"type": "tpe", "seed": 7},
    "parallelism": 2,
    "model_name": "bc-logreg",
}


async def submit(client: httpx.AsyncClient, job: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post("/api/v1/training/jobs", json=job, headers={**ADMIN, **headers})


async def wait_for_job(
    client: httpx.AsyncClient, job_id: str, statuses: set[str] = FINAL, timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = (await client.get(f"/api/v1/training/jobs/{job_id}", headers=ADMIN)).json()
        if job["status"] in statuses:
            return dict(job)
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.1)


async def test_a_job_searches_tracks_and_registers(client: httpx.AsyncClient) -> None:
    response = await submit(client, SMALL_JOB)
    assert response.status_code == 202, response.text
    job = await wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    progress, result = job["progress"], job["result"]
    assert progress["trials_total"] == 4
    assert progress["trials_finished"] == 4
    assert progress["best_value"] == result["best_value"]
    assert 0.9 < result["best_value"] <= 1.0
    assert set(result["best_params"]) == {"C"}
    assert result["model_version"] == "1"
    assert result["mlflow_experiment_id"] and result["mlflow_parent_run_id"]

    trials = (await client.get(f"/api/v1/training/jobs/{job['id']}/trials", headers=ADMIN)).json()
    assert trials["total"] == 4
    assert {t["state"] for t in trials["items"]} <= {"complete", "pruned"}

    versions = (
        await client.get("/api/v1/training/models/bc-logreg/versions", headers=ADMIN)
    ).json()
    assert versions["total"] == 1
    tags = versions["items"][0]["tags"]
    assert tags["mlops.job_id"] == job["id"]
    assert tags["mlops.metric"] == "accuracy"
    assert tags["mlops.dataset_digest"] == result["dataset_digest"]


async def test_bad_jobs_are_refused_naming_the_field(client: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"estimator": "xgboost"}, "estimator", "unknown estimator"),
        ({"estimator": "logistic_regression", "task": "regression"}, "estimator", "does not do"),
        (
            {
                "search_space": {
                    "C": {"type": "float", "low": 0.1, "high": 1},
                    "depth": {"type": "int", "low": 1, "high": 3},
                }
            },
            "search_space.depth",
            "has no parameter",
        ),
        (
            {
                "estimator": "random_forest",
                "search_space": {"max_features": {"type": "categorical", "choices": ["sqrt", "x"]}},
            },
            "search_space.max_features",
            "max_features",
        ),
        ({"target": "label"}, "target", "not in"),
        ({"dataset": "sklearn://nope"}, "dataset", "unknown sklearn dataset"),
        ({"dataset": "/no/such/file.csv"}, "dataset", "not found"),
        ({"metric": "accurate"}, "metric", "unknown metric"),
        ({"cv_folds": 3, "holdout": 0.2}, "holdout", "not both"),
        ({"n_trials": 0}, "n_trials", "greater than or equal to 1"),
        ({"model_name": "no spaces allowed"}, "model_name", "pattern"),
    ]
    for change, field, words in cases:
        response = await submit(client, {**SMALL_JOB, **change})
        assert response.status_code == 422, (change, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        errors = response.json()["errors"]
        assert any(e["field"] == field and words in e["message"] for e in errors), (change, errors)
    listed = (await client.get("/api/v1/training/jobs", headers=ADMIN)).json()
    assert listed["total"] == 0  # nothing half-created


async def test_an_empty_dataset_is_refused(client: httpx.AsyncClient, tmp_path: Any) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("a,b,target\n")
    response = await submit(client, {**SMALL_JOB, "dataset": str(empty)})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "dataset"
    assert "no rows" in response.json()["errors"][0]["message"]


async def test_a_job_that_fails_on_its_data_says_why(
    client: httpx.AsyncClient, tmp_path: Any
) -> None:
    text = tmp_path / "text.csv"
    text.write_text("colour,size,target\nred,1,0\nblue,2,1\nred,3,0\nblue,4,1\n" * 5)
    response = await submit(client, {**SMALL_JOB, "dataset": str(text), "model_name": None})
    assert response.status_code == 202, response.text
    job = await wait_for_job(client, response.json()["id"])
    assert job["status"] == "failed"
    assert "colour" in job["error"] and "not numeric" in job["error"]
    assert job["error"].startswith("prepare: ")


async def test_idempotency_key_returns_the_same_job(client: httpx.AsyncClient) -> None:
    job = {**SMALL_JOB, "n_trials": 1, "model_name": None}
    first = await submit(client, job, **{"Idempotency-Key": "ci-42"})
    again = await submit(client, job, **{"Idempotency-Key": "ci-42"})
    other = await submit(client, {**job, "n_trials": 2}, **{"Idempotency-Key": "ci-42"})
    assert first.status_code == 202 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert other.status_code == 409
    listed = (await client.get("/api/v1/training/jobs", headers=ADMIN)).json()
    assert listed["total"] == 1
    await wait_for_job(client, first.json()["id"])


async def test_cancel_stops_the_workers_and_registers_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    slow = {
        **SMALL_JOB,
        "estimator": "gradient_boosting",
        "n_trials": 200,
        "parallelism": 1,
        "model_name": "never-registered",
    }
    job = (await submit(client, slow)).json()
    deadline = time.monotonic() + 60
    while not (await client.get(f"/api/v1/training/jobs/{job['id']}", headers=ADMIN)).json()[
        "result"
    ]["mlflow_parent_run_id"]:  # searching: prepare is done
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    cancelled = await client.post(f"/api/v1/training/jobs/{job['id']}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = await client.post(f"/api/v1/training/jobs/{job['id']}/cancel", headers=ADMIN)
    assert again.status_code == 409
    final = await wait_for_job(client, job["id"])
    assert final["status"] == "cancelled" and final["result"]["model_version"] is None
    run = (
        await client.get(f"/api/v1/pipelines/runs/{final['pipeline_run_id']}", headers=ADMIN)
    ).json()
    assert {step["status"] for step in run["steps"]} <= {"succeeded", "cancelled", "skipped"}
    missing = await client.get("/api/v1/training/models/never-registered", headers=ADMIN)
    assert missing.status_code == 404
    # what the search left open is closed: no trial stays running, the MLflow run is killed
    deadline = time.monotonic() + 20
    while True:
        trials = (
            await client.get(
                f"/api/v1/training/jobs/{job['id']}/trials?state=running", headers=ADMIN
            )
        ).json()
        parent = final["result"]["mlflow_parent_run_id"]
        status = mlflow_client(settings).get_run(parent).info.status
        if trials["total"] == 0 and status == "KILLED":
            break
        assert time.monotonic() < deadline, (trials, status)
        await asyncio.sleep(0.2)


async def test_lists_filter_and_page(client: httpx.AsyncClient) -> None:
    job = {**SMALL_JOB, "n_trials": 3, "parallelism": 1, "model_name": None}
    created = (await submit(client, job)).json()
    done = await wait_for_job(client, created["id"])
    assert done["status"] == "succeeded"
    page = (
        await client.get(
            f"/api/v1/training/jobs/{created['id']}/trials?limit=2&offset=1", headers=ADMIN
        )
    ).json()
    assert page["total"] == 3 and [t["number"] for t in page["items"]] == [1, 2]
    assert all(t["duration_seconds"] > 0 and t["finished_at"] for t in page["items"])
    complete = (
        await client.get(f"/api/v1/training/jobs/{created['id']}/trials?state=fail", headers=ADMIN)
    ).json()
    assert complete["total"] == 0
    succeeded = (await client.get("/api/v1/training/jobs?status=succeeded", headers=ADMIN)).json()
    failed = (await client.get("/api/v1/training/jobs?status=failed", headers=ADMIN)).json()
    assert succeeded["total"] == 1 and failed["total"] == 0
    assert succeeded["items"][0]["id"] == created["id"]
    bad = await client.get("/api/v1/training/jobs?status=done", headers=ADMIN)
    assert bad.status_code == 422
    pipelines = (await client.get("/api/v1/pipelines", headers=ADMIN)).json()
    assert pipelines["total"] == 0  # the system pipeline jobs run on is not listed


async def test_catalogue_registry_errors_and_roles(client: httpx.AsyncClient) -> None:
    from tests.conftest import create_key

    estimators = (await client.get("/api/v1/training/estimators", headers=ADMIN)).json()
    names = {e["name"] for e in estimators}
    assert {
        "logistic_regression",
        "ridge",
        "random_forest",
        "gradient_boosting",
        "hist_gradient_boosting",
        "svm",
        "k_nearest_neighbours",
    } <= names
    assert all(e["default_search_space"] for e in estimators)
    assert (await client.get(f"/api/v1/training/jobs/{'0' * 32}", headers=ADMIN)).status_code == 404
    assert (await client.get("/api/v1/training/models", headers=ADMIN)).json()["total"] == 0
    missing = await client.post(
        "/api/v1/training/models/nope/aliases",
        json={"alias": "champion", "version": "1"},
        headers=ADMIN,
    )
    assert missing.status_code == 404
    bad_alias = await client.post(
        "/api/v1/training/models/nope/aliases",
        json={"alias": "1st", "version": "x"},
        headers=ADMIN,
    )
    assert bad_alias.status_code == 422
    viewer = await create_key(client, "viewer")
    refused = await client.post(
        "/api/v1/training/jobs", json=SMALL_JOB, headers={"X-API-Key": viewer}
    )
    assert refused.status_code == 403
    assert (
        await client.get("/api/v1/training/jobs", headers={"X-API-Key": viewer})
    ).status_code == 200
    assert (await client.get("/api/v1/training/jobs")).status_code == 401


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # aliases live in MLflow alone
async def test_aliases_move_between_versions(client: httpx.AsyncClient) -> None:
    job = {**SMALL_JOB, "n_trials": 1, "parallelism": 1, "model_name": "aliased"}
    for _ in range(2):
        created = (await submit(client, job)).json()
        assert (await wait_for_job(client, created["id"]))["status"] == "succeeded"
    for version in ("1", "2"):
        moved = await client.post(
            "/api/v1/training/models/aliased/aliases",
            json={"alias": "champion", "version": version},
            headers=ADMIN,
        )
        assert moved.status_code == 200 and moved.json()["aliases"] == ["champion"]
    model = (await client.get("/api/v1/training/models/aliased", headers=ADMIN)).json()
    assert model["aliases"] == {"champion": "2"} and model["latest_version"] == "2"
    versions = (await client.get("/api/v1/training/models/aliased/versions", headers=ADMIN)).json()
    assert [(v["version"], v["aliases"]) for v in versions["items"]] == [
        ("2", ["champion"]),
        ("1", []),
    ]
    no_version = await client.post(
        "/api/v1/training/models/aliased/aliases",
        json={"alias": "champion", "version": "9"},
        headers=ADMIN,
    )
    assert no_version.status_code == 404
    not_a_number = await client.get("/api/v1/training/models/aliased/versions/v1", headers=ADMIN)
    assert not_a_number.status_code == 404, not_a_number.text
    removed = await client.delete("/api/v1/training/models/aliased/aliases/champion", headers=ADMIN)
    assert removed.status_code == 204
    gone = await client.delete("/api/v1/training/models/aliased/aliases/champion", headers=ADMIN)
    assert gone.status_code == 404
    listed = (await client.get("/api/v1/training/models", headers=ADMIN)).json()
    assert [m["name"] for m in listed["items"]] == ["aliased"]
