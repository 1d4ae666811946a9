"""Retraining policies and their history through the API, on both stores: the policy's life
(create, read, list, change, disable, delete), what a policy may not say (each refusal naming
its field), who may do what, a manual trigger with its lineage, and the events' routes.

The app's own retraining loop is idle (``retraining_evaluation_seconds`` 3600): a policy here
starts a retraining only when a test triggers it. The training job that starts runs in the
background and is not awaited: the tests look at the retraining, not at the job.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from mlops.core.settings import Settings
from mlops.retraining.models import RetrainingEvent
from tests.conftest import ADMIN, create_key
from tests.integration.test_retraining_triggers import add_deployment

RETRAINING = "/api/v1/retraining"
POLICIES = f"{RETRAINING}/policies"
EVENTS = f"{RETRAINING}/events"
TRAINING = {"estimator": "logistic_regression", "n_trials": 1, "cv_folds": 2}


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    """The app's retraining loop idle: nothing starts unless a test triggers it."""
    made: Settings = settings_factory(retraining_evaluation_seconds=3600)
    return made


def policy(name: str = "bc-guard", **fields: Any) -> dict[str, Any]:
    return {"name": name, "deployment": "bc", "training": TRAINING, **fields}


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    created = await client.post(POLICIES, json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    return dict(created.json())


async def finish(app: FastAPI, event_id: str) -> None:
    """The retraining is over (as the controller would record it): no longer in flight."""
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(
            update(RetrainingEvent)
            .where(RetrainingEvent.id == uuid.UUID(event_id))
            .values(status="kept_champion", finished_at=datetime.now(UTC))
        )


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


DRIFT = {"type": "data_drift", "min_drifted_features": 2}
NIGHTLY = {"type": "schedule", "cron": "0 3 * * *", "timezone": "Europe/Berlin"}


async def test_a_policys_life(app: FastAPI, client: httpx.AsyncClient) -> None:
    await add_deployment(app, "bc")
    await add_deployment(app, "churn")
    body = policy(
        description="guards bc",
        triggers=[DRIFT, {"type": "performance_degradation", "threshold": 0.8}],
        comparison={"metric": "f1", "min_rows": 50},
        promotion={"mode": "approval", "strategy": "blue_green"},
        cooldown_minutes=120,
        max_runs_per_day=2,
    )
    created = await create(client, body)
    assert created["name"] == "bc-guard" and created["deployment"] == "bc"
    assert created["enabled"] is True and created["in_flight"] is None
    assert created["last_triggered_at"] is None
    assert created["created_by"].startswith("bootstrap")
    assert created["training"]["estimator"] == "logistic_regression"
    assert created["training"]["n_trials"] == 1 and created["training"]["model_name"] is None
    assert created["triggers"] == [
        {
            "type": "data_drift",
            "min_drifted_features": 2,
            "min_drifted_share": None,
            "features": None,
            "max_report_age_hours": 24.0,
        },
        {
            "type": "performance_degradation",
            "metric": "accuracy",
            "threshold": 0.8,
            "max_relative_drop": None,
            "window_hours": 24.0,
            "min_labelled": 100,
        },
    ]
    assert created["comparison"]["metric"] == "f1" and created["comparison"]["test"] is None
    assert created["comparison"]["holdout"] == {
        "source": "recent",
        "share": 0.3,
        "dataset": None,
        "label_column": None,
    }
    assert created["promotion"] == {"mode": "approval", "strategy": "blue_green", "settings": None}
    assert created["cooldown_minutes"] == 120 and created["max_runs_per_day"] == 2
    fetched = await client.get(f"{POLICIES}/bc-guard", headers=ADMIN)
    assert fetched.status_code == 200 and fetched.json() == created

    await create(client, policy("alpha"))
    await create(client, policy("churn-guard", deployment="churn", enabled=False))

    async def names(**query: Any) -> tuple[list[str], int]:
        page = await client.get(POLICIES, params=query, headers=ADMIN)
        assert page.status_code == 200, page.text
        return [item["name"] for item in page.json()["items"]], page.json()["total"]

    assert await names() == (["alpha", "bc-guard", "churn-guard"], 3)
    assert await names(limit=2) == (["alpha", "bc-guard"], 3)
    assert await names(limit=2, offset=2) == (["churn-guard"], 3)
    assert await names(deployment="bc") == (["alpha", "bc-guard"], 2)
    assert await names(deployment="churn") == (["churn-guard"], 1)
    assert await names(enabled="false") == (["churn-guard"], 1)
    assert await names(enabled="true", deployment="bc", offset=1) == (["bc-guard"], 2)

    # a PATCH replaces the parts it names; the rest stays
    patched = await client.patch(
        f"{POLICIES}/bc-guard",
        json={"triggers": [NIGHTLY], "cooldown_minutes": 30},
        headers=ADMIN,
    )
    assert patched.status_code == 200, patched.text
    changed = patched.json()
    assert changed["triggers"] == [{**NIGHTLY, "type": "schedule"}]
    assert changed["cooldown_minutes"] == 30 and changed["max_runs_per_day"] == 2
    assert changed["comparison"] == created["comparison"]
    assert changed["promotion"] == created["promotion"]
    assert changed["description"] == "guards bc"
    assert when(changed["updated_at"]) > when(created["updated_at"])
    assert changed["created_at"] == created["created_at"]

    # the merged policy is checked as a whole: a regression job cannot be compared on f1
    regression = {**TRAINING, "task": "regression", "estimator": "ridge"}
    refused = await client.patch(
        f"{POLICIES}/bc-guard", json={"training": regression}, headers=ADMIN
    )
    assert "f1 needs classification" in problem(refused, 422)["errors"][0]["message"]
    for part in ("training", "triggers"):  # required parts cannot be cleared
        cleared = await client.patch(f"{POLICIES}/bc-guard", json={part: None}, headers=ADMIN)
        assert problem(cleared, 422)["errors"][0]["field"] == part
    unknown = await client.patch(
        f"{POLICIES}/bc-guard", json={"training": {"estimator": "nope"}}, headers=ADMIN
    )
    assert problem(unknown, 422)["errors"][0]["field"] == "training.estimator"
    renamed = await client.patch(f"{POLICIES}/bc-guard", json={"name": "other"}, headers=ADMIN)
    assert problem(renamed, 422)["errors"][0]["field"] == "name"
    both = await client.patch(
        f"{POLICIES}/bc-guard",
        json={"training": {**TRAINING, "task": "regression", "estimator": "ridge"},
              "comparison": {"metric": "rmse"}},
        headers=ADMIN,
    )  # fmt: skip
    assert both.status_code == 200, both.text
    assert both.json()["training"]["task"] == "regression"
    assert both.json()["triggers"] == changed["triggers"]
    missing = await client.patch(f"{POLICIES}/nope", json={}, headers=ADMIN)
    assert "nope" in problem(missing, 404)["detail"]

    disabled = await client.post(f"{POLICIES}/bc-guard/disable", headers=ADMIN)
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    assert await names(enabled="false") == (["bc-guard", "churn-guard"], 2)
    enabled = await client.post(f"{POLICIES}/bc-guard/enable", headers=ADMIN)
    assert enabled.status_code == 200 and enabled.json()["enabled"] is True
    via_patch = await client.patch(f"{POLICIES}/alpha", json={"enabled": False}, headers=ADMIN)
    assert via_patch.json()["enabled"] is False

    deleted = await client.delete(f"{POLICIES}/bc-guard", headers=ADMIN)
    assert deleted.status_code == 204 and deleted.content == b""
    problem(await client.get(f"{POLICIES}/bc-guard", headers=ADMIN), 404)
    problem(await client.delete(f"{POLICIES}/bc-guard", headers=ADMIN), 404)
    assert await names() == (["alpha", "churn-guard"], 2)


async def test_a_duplicate_name_conflicts(app: FastAPI, client: httpx.AsyncClient) -> None:
    await add_deployment(app, "bc")
    await create(client, policy())
    again = await client.post(POLICIES, json=policy(), headers=ADMIN)
    assert "bc-guard" in problem(again, 409)["detail"]


class Case(NamedTuple):
    name: str
    change: dict[str, Any]
    field: str  # the errors[] entry's field
    message: str  # in its message


INVALID = [
    Case("deployment", {"deployment": "nope"}, "deployment", "no deployment 'nope'"),
    Case(
        "estimator",
        {"training": {"estimator": "nope"}},
        "training.estimator",
        "unknown estimator 'nope'",
    ),
    Case(
        "model-name",
        {"training": {**TRAINING, "model_name": "other"}},
        "training.model_name",
        "registers the deployment's model",
    ),
    Case(
        "cron",
        {"triggers": [{"type": "schedule", "cron": "61 * * * *"}]},
        "triggers.0.schedule.cron",
        "not a 5-field cron expression",
    ),
    Case(
        "timezone",
        {"triggers": [{"type": "schedule", "cron": "0 3 * * *", "timezone": "Mars/Olympus"}]},
        "triggers.0.schedule.timezone",
        "unknown time zone",
    ),
    Case(
        "threshold-and-drop",
        {
            "triggers": [
                DRIFT,
                {"type": "performance_degradation", "threshold": 0.8, "max_relative_drop": 0.1},
            ]
        },
        "triggers.1.performance_degradation",
        "give exactly one of threshold and max_relative_drop",
    ),
    Case(
        "metric",
        {"triggers": [{"type": "performance_degradation", "metric": "speed", "threshold": 1}]},
        "triggers.0.performance_degradation.metric",
        "unknown metric 'speed'",
    ),
    Case(
        "mcnemar-f1",
        {"comparison": {"metric": "f1", "test": "mcnemar"}},
        "comparison",
        "McNemar's test compares accuracy",
    ),
    Case(
        "feature-view",
        {
            "triggers": [
                NIGHTLY,
                {"type": "data_volume", "feature_view": "nope", "min_new_rows": 10},
            ]
        },
        "triggers.1.feature_view",
        "no feature view 'nope'",
    ),
    Case(
        "volume-half",
        {"triggers": [{"type": "data_volume", "feature_view": "usage"}]},
        "triggers.0.data_volume",
        "give feature_view with min_new_rows",
    ),
    Case(
        "training-dataset",
        {"training": {**TRAINING, "dataset": "/nowhere/data.csv"}},
        "training.dataset",
        "dataset file not found",
    ),
    Case(
        "holdout-dataset",
        {"comparison": {"holdout": {"source": "dataset", "dataset": "sklearn://nope"}}},
        "comparison.holdout.dataset",
        "unknown sklearn dataset",
    ),
    Case(
        "drift-two-rules",
        {"triggers": [{"type": "data_drift", "features": ["x"], "min_drifted_features": 2}]},
        "triggers.0.data_drift",
        "give at most one of features, min_drifted_features",
    ),
    Case("trigger-type", {"triggers": [{"type": "sometimes"}]}, "triggers.0", "sometimes"),
    Case("name", {"name": "Not_A_Name"}, "name", "pattern"),
]


async def test_an_invalid_policy_is_refused_naming_its_field(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await add_deployment(app, "bc")
    for case in INVALID:
        refused = await client.post(POLICIES, json=policy(**case.change), headers=ADMIN)
        body = problem(refused, 422)
        assert body["type"] == "urn:mlops:problem:validation-error", case.name
        named = [error for error in body["errors"] if error["field"] == case.field]
        assert len(named) == 1, (case.name, body["errors"])
        assert named[0]["loc"][0] == "body", case.name
        assert case.message in named[0]["message"], (case.name, named[0])
    listed = await client.get(POLICIES, headers=ADMIN)
    assert listed.json()["total"] == 0


async def test_who_may_do_what(app: FastAPI, client: httpx.AsyncClient) -> None:
    await add_deployment(app, "bc")
    await create(client, policy())
    viewer = {"X-API-Key": await create_key(client, "viewer")}
    engineer = {"X-API-Key": await create_key(client, "ml_engineer")}

    for path in (POLICIES, f"{POLICIES}/bc-guard", EVENTS):
        assert (await client.get(path, headers=viewer)).status_code == 200, path
        problem(await client.get(path), 401)
    dry_run = await client.post(f"{POLICIES}/bc-guard/evaluate", headers=viewer)
    assert dry_run.status_code == 200, dry_run.text

    for method, path, body in (
        ("POST", POLICIES, policy("second")),
        ("PATCH", f"{POLICIES}/bc-guard", {"cooldown_minutes": 5}),
        ("POST", f"{POLICIES}/bc-guard/disable", None),
        ("POST", f"{POLICIES}/bc-guard/trigger", None),
        ("DELETE", f"{POLICIES}/bc-guard", None),
    ):
        denied = await client.request(method, path, json=body, headers=viewer)
        problem(denied, 403)
        problem(await client.request(method, path, json=body), 401)
    assert (await client.get(f"{POLICIES}/bc-guard", headers=ADMIN)).json()["enabled"] is True

    made = await client.post(POLICIES, json=policy("second"), headers=engineer)
    assert made.status_code == 201, made.text
    assert made.json()["created_by"].startswith("ml_engineer-key/")


async def test_a_manual_trigger_and_the_history(app: FastAPI, client: httpx.AsyncClient) -> None:
    await add_deployment(app, "bc")
    await add_deployment(app, "idle", serving=False)
    await create(client, policy(triggers=[NIGHTLY]))
    await create(client, policy("idle-guard", deployment="idle"))

    dry_run = await client.post(f"{POLICIES}/bc-guard/evaluate", headers=ADMIN)
    assert dry_run.status_code == 200, dry_run.text
    assert dry_run.json()["would_start"] is False and dry_run.json()["trigger"] is None
    [check] = dry_run.json()["checks"]
    assert check["type"] == "schedule" and check["fired"] is False and check["index"] == 0

    keyed = {**ADMIN, "Idempotency-Key": "ci-run-42"}
    triggered = await client.post(
        f"{POLICIES}/bc-guard/trigger", json={"reason": "labels audited"}, headers=keyed
    )
    assert triggered.status_code == 202, triggered.text
    event = triggered.json()
    # a CI job's retry with the same key gets the same retraining, not a 409 or a second one
    retried = await client.post(
        f"{POLICIES}/bc-guard/trigger", json={"reason": "labels audited"}, headers=keyed
    )
    assert retried.status_code == 200, retried.text
    assert retried.json()["id"] == event["id"]
    elsewhere = await client.post(f"{POLICIES}/idle-guard/trigger", headers=keyed)
    assert "started a retraining of 'bc-guard'" in problem(elsewhere, 409)["detail"]
    assert event["policy"] == "bc-guard" and event["deployment"] == "bc"
    assert event["model_name"] == "bc-model" and event["champion_version"] == "1"
    assert event["trigger"] == "manual" and event["reason"] == "labels audited"
    assert event["status"] == "training" and event["challenger_version"] is None
    assert event["actor"].startswith("bootstrap") and event["finished_at"] is None
    assert event["comparison"] is None
    trigger, run, job = event["chain"]
    assert [trigger["stage"], run["stage"], job["stage"]] == [
        "trigger",
        "pipeline_run",
        "training_job",
    ]
    assert trigger["summary"] == "manual: labels audited" and trigger["actor"] == event["actor"]
    assert run["ref"] == event["pipeline_run_id"] and job["ref"] == event["training_job_id"]
    assert run["actor"] == job["actor"] == "retraining/bc-guard"
    assert run["detail"]["dataset"].startswith("labelled://bc?")
    assert "part=train" in run["detail"]["dataset"]

    # the training job it submitted is a real one, registering the deployment's model
    training = await client.get(f"/api/v1/training/jobs/{event['training_job_id']}", headers=ADMIN)
    assert training.status_code == 200, training.text
    assert training.json()["spec"]["model_name"] == "bc-model"
    assert training.json()["spec"]["dataset"] == run["detail"]["dataset"]

    fetched = await client.get(f"{EVENTS}/{event['id']}", headers=ADMIN)
    assert fetched.status_code == 200
    assert [link["stage"] for link in fetched.json()["chain"]][:3] == [
        "trigger",
        "pipeline_run",
        "training_job",
    ]
    policy_now = (await client.get(f"{POLICIES}/bc-guard", headers=ADMIN)).json()
    assert policy_now["in_flight"] == event["id"]
    assert when(policy_now["last_triggered_at"]) == when(event["created_at"])

    # one at a time, and none for a deployment that serves no model
    again = await client.post(f"{POLICIES}/bc-guard/trigger", headers=ADMIN)
    assert event["id"] in problem(again, 409)["detail"]
    idle = await client.post(f"{POLICIES}/idle-guard/trigger", headers=ADMIN)
    assert "serves no model" in problem(idle, 409)["detail"]
    problem(await client.post(f"{POLICIES}/nope/trigger", headers=ADMIN), 404)

    async def listed(**query: str) -> list[str]:
        page = await client.get(EVENTS, params=query, headers=ADMIN)
        assert page.status_code == 200, page.text
        return [item["id"] for item in page.json()["items"]]

    assert await listed() == [event["id"]]
    assert await listed(policy="bc-guard", trigger="manual") == [event["id"]]
    assert await listed(policy="idle-guard") == []
    assert await listed(trigger="schedule") == []
    status = (await client.get(f"{EVENTS}/{event['id']}", headers=ADMIN)).json()["status"]
    assert await listed(status=status) == [event["id"]]
    assert await listed(status="promoted") == []
    problem(await client.get(EVENTS, params={"status": "sleeping"}, headers=ADMIN), 422)

    # not awaiting approval: neither approved nor rejected
    for verdict in ("approve", "reject"):
        refused = await client.post(
            f"{EVENTS}/{event['id']}/{verdict}", json={"reason": "looks fine"}, headers=ADMIN
        )
        assert "not awaiting approval" in problem(refused, 409)["detail"]
        unknown = await client.post(f"{EVENTS}/{uuid.uuid4()}/{verdict}", headers=ADMIN)
        problem(unknown, 404)
    problem(await client.get(f"{EVENTS}/{uuid.uuid4()}", headers=ADMIN), 404)
    problem(await client.get(f"{EVENTS}/not-a-uuid", headers=ADMIN), 422)


async def test_a_policy_with_a_retraining_in_flight_is_not_deleted(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await add_deployment(app, "bc")
    await create(client, policy())
    triggered = await client.post(f"{POLICIES}/bc-guard/trigger", headers=ADMIN)
    assert triggered.status_code == 202, triggered.text
    event = triggered.json()

    refused = await client.delete(f"{POLICIES}/bc-guard", headers=ADMIN)
    assert event["id"] in problem(refused, 409)["detail"]
    assert (await client.get(f"{POLICIES}/bc-guard", headers=ADMIN)).status_code == 200

    await finish(app, event["id"])
    deleted = await client.delete(f"{POLICIES}/bc-guard", headers=ADMIN)
    assert deleted.status_code == 204, deleted.text
    # the history outlives the policy, and a new policy of that name starts afresh
    kept = await client.get(f"{EVENTS}/{event['id']}", headers=ADMIN)
    assert kept.status_code == 200 and kept.json()["policy"] == "bc-guard"
    assert kept.json()["status"] == "kept_champion"
    renewed = await create(client, policy())
    assert renewed["in_flight"] is None and renewed["last_triggered_at"] is None


async def test_the_routes_are_documented(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    expected = {
        ("post", "/policies"),
        ("get", "/policies"),
        ("get", "/policies/{name}"),
        ("patch", "/policies/{name}"),
        ("delete", "/policies/{name}"),
        ("post", "/policies/{name}/enable"),
        ("post", "/policies/{name}/disable"),
        ("post", "/policies/{name}/evaluate"),
        ("post", "/policies/{name}/trigger"),
        ("get", "/events"),
        ("get", "/events/{event_id}"),
        ("post", "/events/{event_id}/approve"),
        ("post", "/events/{event_id}/reject"),
    }
    found = {
        (method, path.removeprefix(RETRAINING)): operation
        for path, item in schema["paths"].items()
        if path.startswith(RETRAINING)
        for method, operation in item.items()
    }
    assert set(found) == expected
    for key, operation in found.items():
        assert operation.get("summary"), key
        assert operation["tags"] == ["retraining"], key
    assert found[("post", "/policies/{name}/trigger")]["responses"].keys() >= {"202", "409"}
    assert "retraining" in {tag["name"] for tag in schema["tags"]}
