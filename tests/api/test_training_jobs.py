"""Training jobs on the local backend: real worker processes, a real Optuna study in the
service's database and a real MLflow store (the embedded SQLite one)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.conftest import ADMIN

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
