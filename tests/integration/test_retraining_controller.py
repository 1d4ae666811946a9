"""The retraining controller in the app, with real training jobs, models and serving:

- approval: a better challenger waits; a rejection keeps the champion; an approval rolls the
  next one out (direct) and moves ``champion``, ``previous-champion`` keeping the old version;
  the chain has every stage, the metrics count the outcomes;
- an alert firing wakes the controller, which otherwise would not look for an hour.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN, client_for, running_app
from tests.integration.test_alerts import add_drift_report
from tests.integration.test_retraining_triggers import add_deployment
from tests.retraining_scenario import rows, write_training_csv

RETRAINING = "/api/v1/retraining"
FULL_CHAIN = [
    "trigger",
    "pipeline_run",
    "training_job",
    "model_version",
    "comparison",
    "approval",
    "rollout",
    "outcome",
]


async def ok(response: Any, *codes: int) -> Any:
    answer = await response
    assert answer.status_code in (codes or (200,)), answer.text
    return answer.json() if answer.content else None


async def until(what: str, check: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def event_in(client: httpx.AsyncClient, event_id: str, *statuses: str) -> dict[str, Any]:
    async def reached() -> Any:
        event = await ok(client.get(f"{RETRAINING}/events/{event_id}"))
        assert event["status"] not in ("failed",), event
        return event if event["status"] in statuses else None

    return dict(await until(f"retraining {event_id} in {statuses}", reached))


async def serving_v1(client: httpx.AsyncClient, dataset: Path) -> None:
    job = await ok(
        client.post(
            "/api/v1/training/jobs",
            json={
                "dataset": str(dataset),
                "estimator": "logistic_regression",
                "n_trials": 1,
                "cv_folds": 3,
                "model_name": "churn-model",
            },
        ),
        202,
    )

    async def trained() -> bool:
        found = await ok(client.get(f"/api/v1/training/jobs/{job['id']}"))
        assert found["status"] not in ("failed", "cancelled"), found
        return bool(found["status"] == "succeeded")

    await until("the first version", trained)
    await ok(
        client.post(
            "/api/v1/deployments",
            json={"name": "churn", "model": {"name": "churn-model", "version": "1"}},
        ),
        202,
    )

    async def ready() -> bool:
        return bool((await ok(client.get("/api/v1/deployments/churn")))["state"] == "ready")

    await until("the deployment", ready)


async def labelled_traffic(app: Any, client: httpx.AsyncClient) -> None:
    records, labels = rows(300, 21, shifted=True, concept="new")
    truth = []
    for start in range(0, len(records), 10):
        answer = await ok(
            client.post(
                "/api/v1/deployments/churn/predict", json={"instances": records[start : start + 10]}
            )
        )
        truth.append({"request_id": answer["request_id"], "labels": labels[start : start + 10]})
    await app.state.prediction_log.flush()
    accepted = await ok(client.post("/api/v1/monitoring/ground-truth", json={"items": truth}))
    assert accepted["matched"] == len(truth)


async def test_a_challenger_waits_for_approval_and_a_rejection_keeps_the_champion(
    settings_factory: Any, tmp_path: Path
) -> None:
    settings = settings_factory(retraining_evaluation_seconds=0.5)
    dataset = write_training_csv(tmp_path / "old.csv")
    async with running_app(settings) as app, client_for(app, **ADMIN) as client:
        await serving_v1(client, dataset)
        await labelled_traffic(app, client)
        policy = {
            "name": "churn-guard",
            "deployment": "churn",
            "training": {"estimator": "logistic_regression", "n_trials": 1, "cv_folds": 3},
            "data_window_hours": 1,
            "comparison": {"min_rows": 50},
            "promotion": {"mode": "approval", "strategy": "direct"},
        }
        await ok(client.post(f"{RETRAINING}/policies", json=policy), 201)

        first = await ok(
            client.post(f"{RETRAINING}/policies/churn-guard/trigger", json={"reason": "audit"}),
            202,
        )
        assert first["trigger"] == "manual" and first["reason"] == "audit"
        waiting = await event_in(client, first["id"], "awaiting_approval")
        assert waiting["comparison"]["decision"] == "challenger_better"
        assert waiting["challenger_version"] == "2"
        busy = await client.post(f"{RETRAINING}/policies/churn-guard/trigger")
        assert busy.status_code == 409  # awaiting approval is in flight
        rejected = await ok(
            client.post(
                f"{RETRAINING}/events/{first['id']}/reject", json={"reason": "not this week"}
            )
        )
        assert rejected["status"] == "rejected"
        assert rejected["chain"][-2]["stage"] == "approval"
        assert rejected["chain"][-2]["summary"] == "rejected: not this week"
        assert rejected["chain"][-2]["actor"].startswith("bootstrap")
        model = await ok(client.get("/api/v1/training/models/churn-model"))
        assert "champion" not in model["aliases"] and model["aliases"]["challenger"] == "2"

        second = await ok(client.post(f"{RETRAINING}/policies/churn-guard/trigger"), 202)
        await event_in(client, second["id"], "awaiting_approval")
        approved = await ok(client.post(f"{RETRAINING}/events/{second['id']}/approve"))
        assert approved["status"] == "rolling_out"
        done = await event_in(client, second["id"], "promoted")
        assert [link["stage"] for link in done["chain"]] == FULL_CHAIN
        assert done["champion_version"] == "1" and done["challenger_version"] == "3"
        model = await ok(client.get("/api/v1/training/models/churn-model"))
        assert model["aliases"]["champion"] == "3"
        assert model["aliases"]["previous-champion"] == "1"
        deployment = await ok(client.get("/api/v1/deployments/churn"))
        assert [v["model_version"] for v in deployment["variants"] if v["weight"] == 100] == ["3"]
        again = await client.post(f"{RETRAINING}/events/{second['id']}/approve")
        assert again.status_code == 409

        history = await ok(client.get(f"{RETRAINING}/events", params={"policy": "churn-guard"}))
        assert [e["status"] for e in history["items"]] == ["promoted", "rejected"]
        metrics = (await client.get("/metrics")).text
        assert 'mlops_retraining_runs_total{outcome="promoted",trigger="manual"}' in metrics
        assert "mlops_retraining_trigger_to_promotion_seconds_count" in metrics


async def test_an_alert_firing_wakes_the_controller(settings_factory: Any) -> None:
    settings = settings_factory(retraining_evaluation_seconds=3600, alert_evaluation_seconds=3600)
    async with running_app(settings) as app, client_for(app, **ADMIN) as client:
        deployment_id = await add_deployment(app)
        policy = {
            "name": "bc-guard",
            "deployment": "bc",
            "training": {"estimator": "logistic_regression", "n_trials": 1},
            "triggers": [{"type": "data_drift", "min_drifted_features": 1}],
        }
        await ok(client.post(f"{RETRAINING}/policies", json=policy), 201)
        await add_drift_report(app, deployment_id, psi=0.4)
        rule = {
            "name": "bc-drift",
            "deployment": "bc",
            "figure": "drift.share",
            "condition": ">",
            "threshold": 0.1,
            "for_minutes": 0,
        }
        await ok(client.post("/api/v1/monitoring/alerts/rules", json=rule), 201)
        await asyncio.sleep(1.0)  # the controller's first pass is long over: it sleeps an hour
        listed = await ok(client.get(f"{RETRAINING}/events"))
        assert listed["total"] == 0

        fired = await app.state.alert_evaluator.evaluate()
        assert [e.status for e in fired] == ["firing"]

        async def started() -> Any:
            page = await ok(client.get(f"{RETRAINING}/events"))
            return page["items"]

        events = await until("the woken controller", started, timeout=15)
        assert events[0]["trigger"] == "data_drift"
        assert "drifted features x" in events[0]["reason"]
