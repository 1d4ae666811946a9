"""Deployments end to end in the app: real MLflow registry, real models, every strategy.

Each model is a small random forest (or the same wrapped to fail: ``tests/model_registry.py``)
registered in the app's own MLflow store. Canary analysis windows are short (1 s) so that a
rollout runs in seconds.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlops.app import create_app
from mlops.core.settings import Settings
from tests.api.test_pipeline_runs import apply, start
from tests.api.test_pipeline_runs import wait_for as wait_for_run
from tests.conftest import ADMIN, base_settings, client_for, free_port, running_app
from tests.model_registry import register, rows

pytestmark = pytest.mark.slow
MODEL = "bc-rf"


def fast_canary(**overrides: Any) -> dict[str, Any]:
    return {
        "canary": {
            "steps": [50, 100],
            "analysis_seconds": 1.0,
            "min_requests": 10,
            "max_inconclusive_steps": 5,
            **overrides,
        }
    }


async def until(
    client: httpx.AsyncClient, name: str, check: Any, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = (await client.get(f"/api/v1/deployments/{name}", headers=ADMIN)).json()
        if check(found):
            return dict(found)
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.1)


def weights(deployment: dict[str, Any]) -> dict[str, float]:
    return {v["name"]: v["weight"] for v in deployment["variants"] if v["weight"] > 0}


async def predict(
    client: httpx.AsyncClient, name: str, records: list[dict[str, Any]]
) -> httpx.Response:
    return await client.post(
        f"/api/v1/deployments/{name}/predict", json={"instances": records}, headers=ADMIN
    )


async def traffic(client: httpx.AsyncClient, name: str, seconds: float, **pick: Any) -> list[int]:
    """Single-row requests from 4 clients for ``seconds``; their status codes."""
    codes: list[int] = []
    stop = time.monotonic() + seconds

    async def one_client(seed: int) -> None:
        records = rows(200, **pick)
        i = seed
        while time.monotonic() < stop:
            codes.append((await predict(client, name, [records[i % len(records)]])).status_code)
            i += 4

    await asyncio.gather(*(one_client(seed) for seed in range(4)))
    return codes


async def history(client: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    page = (await client.get(f"/api/v1/deployments/{name}/history?limit=200", headers=ADMIN)).json()
    return list(page["items"])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return base_settings(tmp_path)


async def test_direct_deploy_serves_and_checks_the_signature(settings: Settings) -> None:
    register(settings.effective_mlflow_uri, MODEL, alias="champion")
    async with running_app(settings) as app, client_for(app) as client:
        created = await client.post(
            "/api/v1/deployments",
            json={"name": "bc", "model": {"name": MODEL, "alias": "champion"}},
            headers=ADMIN,
        )
        assert created.status_code == 202, created.text
        assert created.json()["state"] == "deploying"
        ready = await until(client, "bc", lambda d: d["state"] == "ready")
        assert weights(ready) == {"v1": 100.0}
        answered = await predict(client, "bc", rows(3))
        assert answered.status_code == 200, answered.text
        body = answered.json()
        assert len(body["predictions"]) == 3 and set(body["predictions"]) <= {0, 1}
        assert (body["variant"], body["model_version"]) == ("v1", "1") and body["request_id"]

        record = rows(1)[0]
        del record["mean texture"]
        refused = await predict(client, "bc", [record])
        assert refused.status_code == 422, refused.text
        assert "mean texture" in refused.text
        for body, field in (
            (b'{"instances": [{"mean radius": 1}], "extra": 1}', "extra"),
            (b'{"instances": "rows"}', "instances"),
            (b'{"instances": [{"mean radius": 1}', "json_invalid"),  # not JSON
        ):
            malformed = await client.post(
                "/api/v1/deployments/bc/predict",
                content=body,
                headers={**ADMIN, "content-type": "application/json"},
            )
            assert malformed.status_code == 422, malformed.text
            assert malformed.headers["content-type"] == "application/problem+json"
            errors = malformed.json()["errors"]
            assert field in {e["field"] for e in errors} | {e["type"] for e in errors}, errors
        kinds = [event["kind"] for event in await history(client, "bc")]
        assert kinds == ["created", "serving"]
        audit = (await client.get("/api/v1/audit?limit=200", headers=ADMIN)).json()["items"]
        actions = {entry["action"] for entry in audit}
        assert "POST /api/v1/deployments" in actions, actions
        # a prediction changes nothing: not audited (a refused authentication would be)
        assert not [e for e in audit if e["action"].endswith("/predict")], audit
        missing = await client.post(
            "/api/v1/deployments",
            json={"name": "nope", "model": {"name": MODEL, "alias": "no-such-alias"}},
            headers=ADMIN,
        )
        assert missing.status_code == 404, missing.text
        assert (await client.get("/api/v1/deployments", headers=ADMIN)).json()["total"] == 1


async def test_an_unreachable_mlflow_server_is_a_503_with_the_settings_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    settings = base_settings(
        tmp_path,
        mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}",
        mlflow_http_max_retries=0,
        mlflow_http_timeout_seconds=2,
    )
    async with running_app(settings) as app, client_for(app) as client:
        # MLflow's own default (7 retries) would keep this request waiting for minutes
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
        refused = await client.post(
            "/api/v1/deployments",
            json={"name": "bc", "model": {"name": MODEL, "alias": "champion"}},
            headers=ADMIN,
        )
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert "the MLflow registry failed" in refused.json()["detail"], refused.text
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the app's, for its lifetime


async def test_a_canary_that_errors_rolls_back_by_itself(settings: Settings) -> None:
    uri = settings.effective_mlflow_uri
    register(uri, MODEL)
    register(uri, MODEL, "flaky")
    async with running_app(settings) as app, client_for(app) as client:
        await client.post(
            "/api/v1/deployments",
            json={
                "name": "bc",
                "model": {"name": MODEL, "version": "1"},
                "strategy": "canary",
                "settings": fast_canary(),
            },
            headers=ADMIN,
        )
        await until(client, "bc", lambda d: d["state"] == "ready")
        patched = await client.patch(
            "/api/v1/deployments/bc", json={"model": {"name": MODEL, "version": "2"}}, headers=ADMIN
        )
        assert patched.status_code == 202, patched.text
        await until(client, "bc", lambda d: weights(d).get("v2") == 50.0)
        started = time.monotonic()
        codes = await traffic(client, "bc", 3.0)
        assert 500 in codes and 200 in codes
        final = await until(client, "bc", lambda d: d["rollout"] is None)
        assert time.monotonic() - started < 10  # within its analysis window (1 s) and a tick
        assert weights(final) == {"v1": 100.0}
        assert next(v for v in final["variants"] if v["name"] == "v2")["status"] == "retired"
        rolled = [e for e in await history(client, "bc") if e["kind"] == "rolled_back"]
        assert rolled and rolled[0]["actor"] == "rollout-controller"
        assert "canary error rate" in rolled[0]["reason"], rolled[0]
        audit = (await client.get("/api/v1/audit?limit=200", headers=ADMIN)).json()["items"]
        decided = [e for e in audit if e["action"] == "deployment.rolled_back"]
        assert decided and decided[0]["principal"] == "rollout-controller", audit
        metrics = (await client.get("/metrics")).text
        assert 'mlops_deployment_rollbacks_total{deployment="bc",reason="analysis"} 1.0' in metrics
        codes = await traffic(client, "bc", 0.5)
        assert set(codes) == {200}


async def test_a_healthy_canary_steps_up_to_all_traffic(settings: Settings) -> None:
    uri = settings.effective_mlflow_uri
    register(uri, MODEL)
    register(uri, MODEL)
    async with running_app(settings) as app, client_for(app) as client:
        await client.post(
            "/api/v1/deployments",
            json={
                "name": "bc",
                "model": {"name": MODEL, "version": "1"},
                "strategy": "canary",
                "settings": fast_canary(max_latency_p95_ratio=20, max_latency_p95_increase_ms=1000),
            },
            headers=ADMIN,
        )
        await until(client, "bc", lambda d: d["state"] == "ready")
        await client.patch(
            "/api/v1/deployments/bc", json={"model": {"name": MODEL, "version": "2"}}, headers=ADMIN
        )
        load = asyncio.create_task(traffic(client, "bc", 6.0))
        final = await until(client, "bc", lambda d: d["rollout"] is None, timeout=30)
        await load
        assert weights(final) == {"v2": 100.0}
        steps = [e["weights"] for e in await history(client, "bc") if e["kind"] == "weight_step"]
        assert steps[0] == {"v1": 50.0, "v2": 50.0} and steps[-1] == {"v1": 0.0, "v2": 100.0}
        assert (await predict(client, "bc", rows(1))).json()["model_version"] == "2"


async def test_blue_green_switches_at_once_and_rolls_back_instantly(settings: Settings) -> None:
    uri = settings.effective_mlflow_uri
    register(uri, MODEL)
    register(uri, MODEL)
    register(uri, MODEL, "broken")
    async with running_app(settings) as app, client_for(app) as client:
        await client.post(
            "/api/v1/deployments",
            json={"name": "bc", "model": {"name": MODEL, "version": "1"}, "strategy": "blue_green"},
            headers=ADMIN,
        )
        await until(client, "bc", lambda d: d["state"] == "ready")
        await client.patch(
            "/api/v1/deployments/bc", json={"model": {"name": MODEL, "version": "2"}}, headers=ADMIN
        )
        switched = await until(client, "bc", lambda d: d["rollout"] is None)
        assert weights(switched) == {"v2": 100.0}
        assert next(v for v in switched["variants"] if v["name"] == "v1")["status"] == "standby"
        back = await client.post(
            "/api/v1/deployments/bc/rollback", json={"reason": "wrong feature set"}, headers=ADMIN
        )
        assert back.status_code == 200, back.text
        assert weights(back.json()) == {"v1": 100.0}
        await asyncio.sleep(1.0)  # the next pass routes by the new split
        assert (await predict(client, "bc", rows(1))).json()["model_version"] == "1"

        await client.patch(
            "/api/v1/deployments/bc", json={"model": {"name": MODEL, "version": "3"}}, headers=ADMIN
        )
        kept = await until(client, "bc", lambda d: d["rollout"] is None)
        broken = next(v for v in kept["variants"] if v["name"] == "v3")
        assert broken["status"] == "failed" and broken["weight"] == 0.0, broken["detail"]
        assert weights(kept) == {"v1": 100.0}
        events = await history(client, "bc")
        manual = [e for e in events if e["kind"] == "rolled_back"]
        assert manual[0]["actor"].startswith("bootstrap/") and manual[0]["reason"] == (
            "wrong feature set"
        )
        assert any(e["kind"] == "variant_failed" for e in events)


async def test_blue_green_keeps_the_old_variant_only_for_its_window(settings: Settings) -> None:
    uri = settings.effective_mlflow_uri
    register(uri, MODEL)
    register(uri, MODEL)
    quick = {"blue_green": {"keep_previous_seconds": 1.0}}
    async with running_app(settings) as app, client_for(app) as client:
        await client.post(
            "/api/v1/deployments",
            json={"name": "bc", "model": {"name": MODEL, "version": "1"}, "strategy": "blue_green"},
            headers=ADMIN,
        )
        await until(client, "bc", lambda d: d["state"] == "ready")
        await client.patch(
            "/api/v1/deployments/bc",
            json={"model": {"name": MODEL, "version": "2"}, "settings": quick},
            headers=ADMIN,
        )
        unloaded = await until(
            client,
            "bc",
            lambda d: any(v["name"] == "v1" and v["status"] == "retired" for v in d["variants"]),
        )
        assert weights(unloaded) == {"v2": 100.0}
        deadline = time.monotonic() + 10  # unloaded a grace period after its route went
        while ("bc-rf", "1") in app.state.deployments.runtime.models:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        late = await client.post("/api/v1/deployments/bc/rollback", headers=ADMIN)
        assert late.status_code == 409 and "nothing to roll back to" in late.text


async def test_deployments_come_back_after_a_restart(settings: Settings) -> None:
    register(settings.effective_mlflow_uri, MODEL)
    async with running_app(settings) as app, client_for(app) as client:
        await client.post(
            "/api/v1/deployments",
            json={"name": "bc", "model": {"name": MODEL, "version": "1"}},
            headers=ADMIN,
        )
        await until(client, "bc", lambda d: d["state"] == "ready")
    restarted = create_app(settings)
    async with restarted.router.lifespan_context(restarted), client_for(restarted) as client:
        deadline = time.monotonic() + 30
        while (await client.get("/ready")).status_code != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        answered = await predict(client, "bc", rows(2))
        assert answered.status_code == 200, answered.text
        assert answered.json()["model_version"] == "1"


async def test_rolling_moves_traffic_in_equal_batches(settings: Settings) -> None:
    uri = settings.effective_mlflow_uri
    register(uri, MODEL)
    register(uri, MODEL)
    rolling = {"rolling": {"batches": 4, "batch_seconds": 0.5}}
    async with running_app(settings) as app, client_for(app) as client:
        await client.post(
            "/api/v1/deployments",
            json={"name": "bc", "model": {"name": MODEL, "version": "1"}, "strategy": "rolling"},
            headers=ADMIN,
        )
        await until(client, "bc", lambda d: d["state"] == "ready")
        await client.patch(
            "/api/v1/deployments/bc",
            json={"model": {"name": MODEL, "version": "2"}, "settings": rolling},
            headers=ADMIN,
        )
        final = await until(client, "bc", lambda d: d["rollout"] is None, timeout=30)
        assert weights(final) == {"v2": 100.0}
        steps = [
            e["weights"]["v2"] for e in await history(client, "bc") if e["kind"] == "weight_step"
        ]
        assert steps == [25.0, 50.0, 75.0, 100.0]


async def test_an_ab_test_keeps_each_user_on_a_variant_and_reports_the_difference(
    settings: Settings,
) -> None:
    uri = settings.effective_mlflow_uri
    register(uri, MODEL)
    register(uri, MODEL)
    users = [f"user-{i}" for i in range(120)]
    async with running_app(settings) as app, client_for(app) as client:
        await client.post(
            "/api/v1/deployments",
            json={"name": "bc", "model": {"name": MODEL, "version": "1"}, "strategy": "ab_test"},
            headers=ADMIN,
        )
        await until(client, "bc", lambda d: d["state"] == "ready")
        await client.patch(
            "/api/v1/deployments/bc", json={"model": {"name": MODEL, "version": "2"}}, headers=ADMIN
        )
        split = await until(client, "bc", lambda d: weights(d).get("v2") == 50.0)
        assert split["state"] == "rolling_out"
        await asyncio.sleep(1.0)  # every process routes by the split after its next pass
        record = rows(1)[0]
        assigned: dict[str, str] = {}
        outcomes = []
        for i, user in enumerate(users):
            by_body = await client.post(
                "/api/v1/deployments/bc/predict",
                json={"instances": [record], "key": user},
                headers=ADMIN,
            )
            by_header = await client.post(
                "/api/v1/deployments/bc/predict",
                json={"instances": [record]},
                headers={**ADMIN, "X-User-Id": user},
            )
            assigned[user] = by_body.json()["variant"]
            assert by_header.json()["variant"] == assigned[user]  # sticky, header or field
            converted = (i % 10) < (6 if assigned[user] == "v2" else 3)
            outcomes.append({"request_id": by_body.json()["request_id"], "value": converted})
        share = sum(v == "v2" for v in assigned.values()) / len(users)
        assert 0.3 < share < 0.7, share
        await asyncio.sleep(1.0)  # predictions are written in batches
        accepted = await client.post(
            "/api/v1/deployments/bc/outcomes",
            json={"outcomes": [*outcomes, {"request_id": "nope", "value": 1}]},
            headers=ADMIN,
        )
        assert accepted.json() == {"accepted": len(users), "unknown": ["nope"]}, accepted.text
        report = (await client.get("/api/v1/deployments/bc/experiment", headers=ADMIN)).json()
        assert report["control"] == "v1" and report["metric"] == "rate"
        control, challenger = report["variants"]
        assert control["predictions"] == 2 * sum(v == "v1" for v in assigned.values())
        assert challenger["comparison"]["difference"] > 0.2
        assert (
            challenger["comparison"]["p_value"] < 0.01 and challenger["comparison"]["significant"]
        )
        metrics = (await client.get("/metrics")).text
        for series in (
            'mlops_predictions_total{deployment="bc",outcome="ok",variant="v2"}',
            'mlops_prediction_latency_seconds_count{deployment="bc",variant="v1"}',
            'mlops_deployment_traffic_weight{deployment="bc",variant="v2"} 50.0',
        ):
            assert series in metrics, series
    restarted = create_app(settings)
    async with restarted.router.lifespan_context(restarted), client_for(restarted) as client:
        while (await client.get("/ready")).status_code != 200:
            await asyncio.sleep(0.1)
        for user in users[:20]:
            again = await client.post(
                "/api/v1/deployments/bc/predict",
                json={"instances": [record], "key": user},
                headers=ADMIN,
            )
            assert again.json()["variant"] == assigned[user]
        promoted = await client.post(
            "/api/v1/deployments/bc/promote", json={"reason": "v2 converts better"}, headers=ADMIN
        )
        assert promoted.status_code == 200, promoted.text
        assert weights(promoted.json()) == {"v2": 100.0} and promoted.json()["rollout"] is None


async def test_a_pipeline_trains_registers_and_deploys_then_the_new_version_serves(
    settings: Settings,
) -> None:
    pipeline = {
        "name": "train-and-deploy",
        "steps": [
            {
                "name": "train",
                "type": "train",
                "params": {
                    "dataset": "sklearn://breast_cancer",
                    "target": "target",
                    "estimator": "logistic_regression",
                    "n_trials": 2,
                    "cv_folds": 2,
                },
            },
            {
                "name": "register",
                "type": "register_model",
                "depends_on": ["train"],
                "params": {"model_uri": "{{ steps.train.outputs.model_uri }}", "name": "bc-pipe"},
            },
            {
                "name": "deploy",
                "type": "deploy",
                "depends_on": ["register"],
                "params": {
                    "deployment": "bc",
                    "model_name": "bc-pipe",
                    "version": "{{ steps.register.outputs.model_version }}",
                },
            },
        ],
    }
    async with running_app(settings) as app, client_for(app) as client:
        await apply(client, pipeline)
        run = await wait_for_run(
            client, (await start(client, "train-and-deploy"))["id"], timeout=240
        )
        assert run["status"] == "succeeded", run
        deployed = {s["name"]: s for s in run["steps"]}["deploy"]["outputs"]
        assert deployed["state"] == "ready" and deployed["model_version"] == "1", deployed
        answered = await predict(client, "bc", rows(2))
        assert answered.status_code == 200, answered.text
        assert answered.json()["model_version"] == "1"
        created = (await history(client, "bc"))[0]
        assert created["actor"] == f"pipeline-run:{run['id']}"
