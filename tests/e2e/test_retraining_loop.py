"""The closed loop on the embedded default, against a service in its own process:

1. version 1 (trained on the old world) serves ``churn``; shifted traffic arrives with labels of
   a new concept; a drift report flags it; the policy's drift trigger fires; the pipeline
   retrains on the window's labelled requests; McNemar's test on the held-out ones finds the
   challenger significantly better; a canary rolls it out; ``champion`` moves; one events
   response shows the whole chain, and the audit log has each decision;
2. ``mlops retraining trigger --wait`` again: the new challenger is no better (exit 3, kept);
3. ``fraud``: a challenger far more accurate offline but too slow online (a 600-tree forest
   against a linear model) fails its canary's latency analysis and is rolled back (exit 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BOOTSTRAP_KEY, free_port
from tests.e2e.test_pipeline_cli import mlops
from tests.processes import service_env, start_service, stop_service
from tests.retraining_scenario import Loop, policy_body, rows, traffic, write_training_csv

pytestmark = pytest.mark.slow
KEY = {"X-API-Key": BOOTSTRAP_KEY}
CHAIN = [
    "trigger",
    "pipeline_run",
    "training_job",
    "model_version",
    "comparison",
    "rollout",
    "outcome",
]


@pytest.fixture
def service_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = service_env(
        tmp_path / "data",
        MLOPS_RETRAINING_EVALUATION_SECONDS="1",
        MLOPS_LOCAL_WORKERS="2",
    )
    process = start_service(env, port, tmp_path / "service.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_service(process)


def test_drift_retrains_compares_canaries_and_promotes_then_keeps_or_rolls_back(
    service_url: str, tmp_path: Path
) -> None:
    dataset = write_training_csv(tmp_path / "old.csv")
    with httpx.Client(base_url=service_url, headers=KEY, timeout=30) as client:
        loop = Loop(client)
        jobs = {m: loop.train_first_version(dataset, m) for m in ("churn-model", "fraud-model")}
        for model, job in jobs.items():
            assert loop.job_version(job) == "1"
            loop.deploy(model.removesuffix("-model"), model, "1", {})
        loop.ok(
            client.put(
                "/api/v1/monitoring/drift/churn/reference",
                json={"source": {"dataset": {"uri": str(dataset), "label_column": "target"}}},
            ),
            201,
        )
        loop.ok(
            client.post(
                "/api/v1/retraining/policies",
                json=policy_body(
                    "churn-guard",
                    "churn",
                    training={"estimator": "logistic_regression"},
                    triggers=[{"type": "data_drift", "min_drifted_features": 1}],
                ),
            ),
            201,
        )
        evaluated = loop.ok(client.post("/api/v1/retraining/policies/churn-guard/evaluate"))
        assert not evaluated["would_start"]
        assert evaluated["checks"][0]["reason"] == "no drift report yet"

        # shifted traffic with the new concept's labels, then monitoring's drift report
        records, labels = rows(400, 7, shifted=True, concept="new")
        loop.serve_labelled("churn", records, labels)
        report = loop.ok(client.post("/api/v1/monitoring/drift/churn/reports"), 201)
        assert report["drifted_count"] >= 1, report

        # the controller (every second) sees the report and starts the retraining
        with traffic(service_url, KEY, "churn", seed=11):
            started = loop.until("the drift trigger to fire", lambda: loop.events("churn-guard"))
            event = loop.finished(started[0]["id"])
        assert event["trigger"] == "data_drift", event
        assert event["status"] == "promoted", event["outcome_reason"]
        assert [link["stage"] for link in event["chain"]] == CHAIN
        assert "drift report" in event["chain"][0]["summary"]
        comparison = event["comparison"]
        assert comparison["test"] == "mcnemar" and comparison["decision"] == "challenger_better"
        assert comparison["mcnemar"]["p_value"] < 0.05
        assert comparison["rows"] >= 60
        assert comparison["challenger"]["metrics"]["accuracy"] > 0.9
        assert comparison["champion"]["metrics"]["accuracy"] < 0.8
        assert event["champion_version"] == "1" and event["challenger_version"] == "2"
        assert event["seconds_to_promotion"] > 0
        model = loop.ok(client.get("/api/v1/training/models/churn-model"))
        assert model["aliases"]["champion"] == "2", model
        assert model["aliases"]["previous-champion"] == "1", model
        deployment = loop.ok(client.get("/api/v1/deployments/churn"))
        serving = [v for v in deployment["variants"] if v["weight"] == 100]
        assert [v["model_version"] for v in serving] == ["2"], deployment
        audit = loop.ok(client.get("/api/v1/audit", params={"limit": 200}))
        actions = {entry["action"] for entry in audit["items"]}
        assert {"retraining.started", "retraining.promoted"} <= actions, actions

    # 2. the same data again: a challenger no better than the new champion
    kept = mlops(service_url, "retraining", "trigger", "churn-guard", "--wait", "--timeout", "300")
    assert kept.returncode == 3, kept.stdout + kept.stderr
    assert "kept_champion" in kept.stdout
    history = mlops(service_url, "retraining", "history", "churn-guard")
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert "kept_champion" in lines[1] and "manual" in lines[1]
    assert "promoted" in lines[2] and "data_drift" in lines[2]

    # 3. better offline, too slow online: the canary's analysis rolls it back
    with httpx.Client(base_url=service_url, headers=KEY, timeout=30) as client:
        loop = Loop(client)
        records, labels = rows(400, 8, shifted=True, concept="new")
        loop.serve_labelled("fraud", records, labels)
        slow_forest = {
            "estimator": "random_forest",
            "search_space": {
                "n_estimators": {"type": "categorical", "choices": [600]},
                "max_depth": {"type": "categorical", "choices": [8]},
            },
        }
        loop.ok(
            client.post(
                "/api/v1/retraining/policies",
                json=policy_body("fraud-guard", "fraud", training=slow_forest, triggers=[]),
            ),
            201,
        )
        with traffic(service_url, KEY, "fraud", seed=12):
            rolled = mlops(
                service_url, "retraining", "trigger", "fraud-guard", "--wait", "--timeout", "300"
            )
        assert rolled.returncode == 1, rolled.stdout + rolled.stderr
        event = loop.events("fraud-guard")[0]
        assert event["status"] == "rolled_back", event
        assert "latency" in event["outcome_reason"], event["outcome_reason"]
        detail = loop.ok(client.get(f"/api/v1/retraining/events/{event['id']}"))
        assert detail["comparison"]["decision"] == "challenger_better"
        model = loop.ok(client.get("/api/v1/training/models/fraud-model"))
        assert "champion" not in model["aliases"], model  # never promoted
        assert model["aliases"]["challenger"] == event["challenger_version"]
