"""A retraining outlives a ``kill -9`` of the service: killed while its training job runs, the
restarted service carries the job on, compares, rolls out and promotes; nothing stays in
flight."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import BOOTSTRAP_KEY, free_port
from tests.processes import service_env, start_service, stop_service
from tests.retraining_scenario import Loop, rows, write_training_csv

pytestmark = pytest.mark.slow
KEY = {"X-API-Key": BOOTSTRAP_KEY}


def test_a_retraining_killed_mid_training_finishes_after_the_restart(tmp_path: Path) -> None:
    port = free_port()
    env = service_env(tmp_path / "data", MLOPS_RETRAINING_EVALUATION_SECONDS="1")
    log = tmp_path / "service.log"
    dataset = write_training_csv(tmp_path / "old.csv")
    url = f"http://127.0.0.1:{port}"
    service = start_service(env, port, log)
    try:
        with httpx.Client(base_url=url, headers=KEY, timeout=30) as client:
            loop = Loop(client)
            assert loop.job_version(loop.train_first_version(dataset, "churn-model")) == "1"
            loop.deploy("churn", "churn-model", "1", {})
            records, labels = rows(300, 31, shifted=True, concept="new")
            loop.serve_labelled("churn", records, labels)
            policy = {
                "name": "churn-guard",
                "deployment": "churn",
                "training": {"estimator": "logistic_regression", "n_trials": 30, "cv_folds": 5},
                "data_window_hours": 1,
                "comparison": {"min_rows": 50},
                "promotion": {"strategy": "direct"},
            }
            loop.ok(client.post("/api/v1/retraining/policies", json=policy), 201)
            event = loop.ok(client.post("/api/v1/retraining/policies/churn-guard/trigger"), 202)

            def training_runs() -> bool:
                job = loop.ok(client.get(f"/api/v1/training/jobs/{event['training_job_id']}"))
                return bool(job["status"] == "running")

            loop.until("the training job to run", training_runs, every=0.05)

        service.send_signal(signal.SIGKILL)
        service.wait(timeout=10)
        service = start_service(env, port, log)

        with httpx.Client(base_url=url, headers=KEY, timeout=30) as client:
            loop = Loop(client)
            done = loop.finished(event["id"], timeout=240)
            assert done["status"] == "promoted", done["outcome_reason"]
            assert done["challenger_version"] == "2"
            in_flight = loop.ok(
                client.get("/api/v1/retraining/events", params={"status": "training"})
            )
            assert in_flight["total"] == 0
            policy_now = loop.ok(client.get("/api/v1/retraining/policies/churn-guard"))
            assert policy_now["in_flight"] is None
    finally:
        stop_service(service)
