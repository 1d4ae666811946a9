"""Retraining triggers in the app, on both stores: each trigger type fires, and does not, for
the reasons it gives, with the figures it read (the prediction log with its ground truth, drift
reports, a cron slot in a time zone, new labelled rows and feature batches); then the guards
that keep a firing trigger from starting a retraining (in flight, cooldown, daily maximum,
disabled) and the manual trigger that bypasses them.

The app's own evaluation loop stays idle: each test evaluates at times it chooses, through
``app.state.retraining.evaluate_policies(now)`` (which starts retrainings) or the service's dry
run. A retraining it starts submits a real training job; its event stays ``training`` until a
test marks it finished, because only the controller's pass (not run here) moves it on.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import mlflow
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from mlops.core.settings import Settings
from mlops.deployments.models import Deployment, DeploymentVariant
from mlops.deployments.runtime import ServedPrediction
from mlops.retraining.models import RetrainingEvent, RetrainingPolicy
from mlops.retraining.schemas import EvaluationOut
from mlops.retraining.service import RetrainingService
from mlops.training.tracking import TAG_METRIC, TAG_METRIC_VALUE
from tests.conftest import ADMIN, client_for, running_app
from tests.integration.test_alerts import add_drift_report, log
from tests.model_registry import register

POLICIES = "/api/v1/retraining/policies"
TRAINING = {"estimator": "logistic_regression", "n_trials": 1, "cv_folds": 2}


@pytest.fixture
def retraining_settings(settings_factory: Any) -> Settings:
    """The app's own retraining (and alert) loops idle: the tests evaluate at chosen times."""
    settings: Settings = settings_factory(
        retraining_evaluation_seconds=3600, alert_evaluation_seconds=3600
    )
    return settings


# --------------------------------------------------------------------------- the setup


async def add_deployment(
    app: FastAPI,
    name: str = "bc",
    *,
    serving: bool = True,
    deployed: datetime | None = None,
) -> uuid.UUID:
    """A deployment row of model NAME-model; ``serving``: with variant v1 serving version 1
    since ``deployed`` (default: a month ago). No model is loaded: figures come from the log
    the tests write."""
    model = f"{name}-model"
    deployment = Deployment(
        name=name, model_name=model, strategy="direct", settings={}, state="ready", created_by="t"
    )
    async with app.state.database.sessionmaker() as session, session.begin():
        session.add(deployment)
        await session.flush()
        if serving:
            session.add(
                DeploymentVariant(
                    deployment_id=deployment.id,
                    name="v1",
                    model_name=model,
                    model_version="1",
                    requested_as="1",
                    weight=100.0,
                    status="ready",
                    created_at=deployed or datetime.now(UTC) - timedelta(days=30),
                )
            )
    return deployment.id


async def create_policy(
    client: httpx.AsyncClient, triggers: list[dict[str, Any]], **fields: Any
) -> dict[str, Any]:
    body = {
        "name": "bc-guard",
        "deployment": "bc",
        "training": TRAINING,
        "triggers": triggers,
        "cooldown_minutes": 0,
        **fields,
    }
    created = await client.post(POLICIES, json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    return dict(created.json())


def served(at: datetime, predictions: list[int]) -> ServedPrediction:
    return ServedPrediction(
        request_id=uuid.uuid4().hex,
        correlation_id=None,
        deployment="bc",
        variant="v1",
        model_version="1",
        columns=("x",),
        rows=[[float(i)] for i in range(len(predictions))],
        predictions=predictions,
        latency_ms=5.0,
        at=at,
    )


async def label(client: httpx.AsyncClient, truth: dict[str, list[int]]) -> None:
    """Ground truth through the API: {request id: one label per row}."""
    items = [{"request_id": request, "labels": labels} for request, labels in truth.items()]
    answered = await client.post(
        "/api/v1/monitoring/ground-truth", json={"items": items}, headers=ADMIN
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["predictions_labelled"] == len(items), answered.text


async def requests_scored(
    app: FastAPI, client: httpx.AsyncClient, at: datetime, right: int, wrong: int
) -> None:
    """``right + wrong`` one-row requests at ``at``, all predicted 1, labelled so that
    ``right`` of them are correct."""
    entries = [served(at, [1]) for _ in range(right + wrong)]
    await log(app, *entries)
    await label(
        client,
        {entry.request_id: [1 if i < right else 0] for i, entry in enumerate(entries)},
    )


async def dry_run(app: FastAPI, settings: Settings, now: datetime) -> EvaluationOut:
    """The policy's evaluation at ``now``, starting nothing."""
    async with app.state.database.sessionmaker() as session:
        service = RetrainingService(session, settings)
        return await service.evaluation(await service.get("bc-guard"), now)


async def events(app: FastAPI) -> list[RetrainingEvent]:
    async with app.state.database.sessionmaker() as session:
        found = await session.scalars(select(RetrainingEvent).order_by(RetrainingEvent.created_at))
        return list(found.all())


async def finish(app: FastAPI, event_id: uuid.UUID) -> None:
    """The retraining is over (as the controller would record it): no longer in flight."""
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(
            update(RetrainingEvent)
            .where(RetrainingEvent.id == event_id)
            .values(status="kept_champion", finished_at=datetime.now(UTC))
        )


async def set_schedule_origin(app: FastAPI, origin: datetime) -> None:
    """Where the policy's schedules count from (a PATCH of its triggers sets it to now)."""
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(
            update(RetrainingPolicy)
            .where(RetrainingPolicy.name == "bc-guard")
            .values(schedule_state={"origin": origin.isoformat()})
        )


# --------------------------------------------------------------------------- performance


async def test_performance_degradation_against_a_threshold(
    retraining_settings: Settings,
) -> None:
    async with running_app(retraining_settings) as app, client_for(app) as client:
        await add_deployment(app)
        await create_policy(
            client,
            [
                {
                    "type": "performance_degradation",
                    "metric": "accuracy",
                    "threshold": 0.8,
                    "window_hours": 2,
                    "min_labelled": 10,
                }
            ],
        )
        now = datetime.now(UTC) + timedelta(minutes=1)
        await requests_scored(app, client, now - timedelta(minutes=30), right=5, wrong=1)
        evaluation = await dry_run(app, retraining_settings, now)
        [check] = evaluation.checks
        assert check.fired is False and evaluation.would_start is False
        assert check.reason == "6 labelled row(s) in the window, fewer than 10"
        assert check.figures == {"labelled": 6, "window_hours": 2.0}
        assert await app.state.retraining.evaluate_policies(now) == []

        # 8 of 10 right: at the threshold is not below it
        await requests_scored(app, client, now - timedelta(minutes=20), right=3, wrong=1)
        [check] = (await dry_run(app, retraining_settings, now)).checks
        assert check.fired is False
        assert check.figures == {"labelled": 10, "window_hours": 2.0, "accuracy": 0.8, "limit": 0.8}
        assert check.reason == "accuracy 0.8 over 10 labelled row(s) is within the threshold 0.8"

        # one more wrong answer: 8 of 11
        await requests_scored(app, client, now - timedelta(minutes=10), right=0, wrong=1)
        evaluation = await dry_run(app, retraining_settings, now)
        [check] = evaluation.checks
        assert check.fired is True and evaluation.would_start is True
        assert evaluation.trigger == "performance_degradation" and evaluation.blocked_by is None
        assert check.figures["labelled"] == 11
        assert check.figures["accuracy"] == pytest.approx(8 / 11)
        assert check.reason == (
            "accuracy 0.7273 over 11 labelled row(s) is worse than the threshold 0.8"
        )
        [event] = await app.state.retraining.evaluate_policies(now)
        assert event.trigger == "performance_degradation" and event.status == "training"
        assert event.reason == check.reason
        assert event.champion_version == "1" and event.training_job_id is not None

        # the window has moved past the bad rows three hours later: no labelled rows in it
        await finish(app, event.id)
        later = await dry_run(app, retraining_settings, now + timedelta(hours=3))
        assert later.checks[0].fired is False and later.checks[0].figures["labelled"] == 0


async def test_performance_is_the_champions_own_since_its_deployment(
    retraining_settings: Settings,
) -> None:
    """Rows answered before the champion was deployed (by the version it replaced) do not
    count: the window starts at the champion's variant."""
    now = datetime.now(UTC) + timedelta(minutes=1)
    async with running_app(retraining_settings) as app, client_for(app) as client:
        await add_deployment(app, deployed=now - timedelta(minutes=30))
        await create_policy(
            client,
            [
                {
                    "type": "performance_degradation",
                    "threshold": 0.8,
                    "window_hours": 2,
                    "min_labelled": 5,
                }
            ],
        )
        await requests_scored(app, client, now - timedelta(minutes=60), right=0, wrong=10)
        await requests_scored(app, client, now - timedelta(minutes=10), right=5, wrong=0)
        [check] = (await dry_run(app, retraining_settings, now)).checks
        assert check.fired is False
        assert check.figures["labelled"] == 5 and check.figures["accuracy"] == 1.0


async def test_performance_degradation_against_the_champions_own_evaluation(
    retraining_settings: Settings,
) -> None:
    """``max_relative_drop`` 0.1 of the champion's recorded accuracy 0.9: the limit is 0.81."""
    uri = retraining_settings.effective_mlflow_uri
    async with running_app(retraining_settings) as app, client_for(app) as client:
        await add_deployment(app)
        await create_policy(
            client,
            [
                {
                    "type": "performance_degradation",
                    "max_relative_drop": 0.1,
                    "window_hours": 2,
                    "min_labelled": 10,
                }
            ],
        )
        now = datetime.now(UTC) + timedelta(minutes=1)
        await requests_scored(app, client, now - timedelta(minutes=30), right=40, wrong=10)

        # the champion is in no registry yet, then registered without its evaluation
        no_baseline = "the champion has no recorded accuracy to compare with"
        for registered in (False, True):
            if registered:
                assert await asyncio.to_thread(register, uri, "bc-model") == "1"
            [check] = (await dry_run(app, retraining_settings, now)).checks
            assert check.fired is False and check.reason == no_baseline
            assert check.figures == {"labelled": 50, "window_hours": 2.0, "accuracy": 0.8}

        registry = mlflow.MlflowClient(uri, uri)
        registry.set_model_version_tag("bc-model", "1", TAG_METRIC, "accuracy")
        registry.set_model_version_tag("bc-model", "1", TAG_METRIC_VALUE, "0.9")
        [check] = (await dry_run(app, retraining_settings, now)).checks
        assert check.fired is True  # 0.8 < 0.81
        assert check.figures["champion_evaluation"] == 0.9
        assert check.figures["champion_evaluation_source"] == "models:/bc-model/1 (accuracy)"
        assert check.figures["limit"] == pytest.approx(0.81)
        assert check.reason == (
            "accuracy 0.8 over 50 labelled row(s) is worse than 0.81 "
            "(10% worse than the champion's 0.9)"
        )

        # a better champion's evaluation moves the limit: 0.8 is within 10% of 0.85 (0.765)
        registry.set_model_version_tag("bc-model", "1", TAG_METRIC_VALUE, "0.85")
        [check] = (await dry_run(app, retraining_settings, now)).checks
        assert check.fired is False and check.figures["limit"] == pytest.approx(0.765)
        assert check.reason.startswith("accuracy 0.8 over 50 labelled row(s) is within 0.765")
        assert await app.state.retraining.evaluate_policies(now) == []

        # two more wrong answers: 40 of 52 right, 0.769..., still within; three: 0.755 is not
        await requests_scored(app, client, now - timedelta(minutes=10), right=0, wrong=2)
        [check] = (await dry_run(app, retraining_settings, now)).checks
        assert check.fired is False and check.figures["accuracy"] == pytest.approx(40 / 52)
        await requests_scored(app, client, now - timedelta(minutes=10), right=0, wrong=1)
        [event] = await app.state.retraining.evaluate_policies(now)
        assert event.trigger == "performance_degradation"
        assert "is worse than 0.765" in event.reason


# --------------------------------------------------------------------------- drift


DRIFT_RULES: list[dict[str, Any]] = [
    {"type": "data_drift"},  # the report's own dataset decision
    {"type": "data_drift", "min_drifted_features": 2},
    {"type": "data_drift", "features": ["z"]},
    {"type": "data_drift", "min_drifted_share": 0.5},
    {"type": "data_drift", "min_drifted_features": 1, "max_report_age_hours": 1},
]


def fired(evaluation: EvaluationOut) -> list[bool]:
    return [check.fired for check in evaluation.checks]


async def test_data_drift_fires_on_a_fresh_report_by_each_rule(
    retraining_settings: Settings,
) -> None:
    async with running_app(retraining_settings) as app, client_for(app) as client:
        deployment_id = await add_deployment(app)
        await create_policy(client, DRIFT_RULES)
        now = datetime.now(UTC)
        evaluation = await dry_run(app, retraining_settings, now)
        assert fired(evaluation) == [False] * 5
        assert {check.reason for check in evaluation.checks} == {"no drift report yet"}

        made = datetime.now(UTC)
        first = await add_drift_report(
            app, deployment_id, drifted=["x", "y"], share=0.5, dataset_drift=False, created_at=made
        )
        evaluation = await dry_run(app, retraining_settings, made + timedelta(minutes=30))
        assert fired(evaluation) == [False, True, False, True, True]
        assert evaluation.trigger == "data_drift" and evaluation.would_start is True
        figures = evaluation.checks[1].figures
        assert figures["report_id"] == str(first)
        assert figures["drifted_features"] == ["x", "y"]
        assert figures["drifted_share"] == 0.5 and figures["dataset_drift"] is False
        assert evaluation.checks[0].reason == (
            f"drift report {first}: drifted features x, y; "
            "does not meet the report's dataset drift decision"
        )
        assert evaluation.checks[2].reason.endswith("does not meet any of z drifted")

        # an hour and more later the report is stale for the 1 h rule only
        later = await dry_run(app, retraining_settings, made + timedelta(minutes=61))
        assert fired(later) == [False, True, False, True, False]
        assert later.checks[4].reason == "the newest drift report is older than 1 h"
        # a day and more later it is stale for all
        stale = await dry_run(app, retraining_settings, made + timedelta(hours=25))
        assert fired(stale) == [False] * 5
        assert stale.checks[0].reason == "the newest drift report is older than 24 h"

        [event] = await app.state.retraining.evaluate_policies(made + timedelta(minutes=30))
        assert event.trigger == "data_drift"  # the first that fired: at least 2 features
        assert event.reason == (
            f"drift report {first}: drifted features x, y; meets at least 2 drifted feature(s)"
        )
        await finish(app, event.id)

        # the report was acted on: it fires no more
        acted = await dry_run(app, retraining_settings, made + timedelta(minutes=31))
        assert fired(acted) == [False] * 5
        assert {check.reason for check in acted.checks} == {
            "the newest drift report predates the last retraining"
        }
        assert await app.state.retraining.evaluate_policies(made + timedelta(minutes=31)) == []

        # a newer report: only z drifted, and the monitor's dataset decision says drift
        second_made = datetime.now(UTC)
        second = await add_drift_report(
            app,
            deployment_id,
            drifted=["z"],
            share=0.25,
            dataset_drift=True,
            created_at=second_made,
        )
        fresh = await dry_run(app, retraining_settings, second_made + timedelta(minutes=5))
        assert fired(fresh) == [True, False, True, False, True]
        assert fresh.checks[0].figures["report_id"] == str(second)
        assert fresh.checks[2].reason == (
            f"drift report {second}: drifted features z; meets any of z drifted"
        )
        assert fresh.checks[3].figures["drifted_share"] == 0.25


# --------------------------------------------------------------------------- schedule


async def test_a_schedule_fires_once_per_slot(retraining_settings: Settings) -> None:
    async with running_app(retraining_settings) as app, client_for(app) as client:
        await add_deployment(app)
        policy = await create_policy(client, [{"type": "schedule", "cron": "* * * * *"}])
        created = datetime.fromisoformat(policy["created_at"])
        # the first slot is the first whole minute after the policy was created
        due = created.replace(second=0, microsecond=0) + timedelta(minutes=1)

        evaluation = await dry_run(app, retraining_settings, due - timedelta(seconds=1))
        [check] = evaluation.checks
        assert check.fired is False and check.reason == f"next due at {due.isoformat()}"
        assert check.figures == {"due_at": due.isoformat(), "cron": "* * * * *", "timezone": "UTC"}
        assert await app.state.retraining.evaluate_policies(due - timedelta(seconds=1)) == []

        at = due + timedelta(seconds=10)
        [event] = await app.state.retraining.evaluate_policies(at)
        assert event.trigger == "schedule"
        assert event.reason == f"'* * * * *' (UTC) was due at {due.isoformat()}"
        await finish(app, event.id)

        # the slot it fired for is spent: the next is a minute later
        slot = due + timedelta(minutes=1)
        for now in (at, due + timedelta(seconds=59)):
            [check] = (await dry_run(app, retraining_settings, now)).checks
            assert check.fired is False and check.figures["due_at"] == slot.isoformat()
            assert await app.state.retraining.evaluate_policies(now) == []
        [again] = await app.state.retraining.evaluate_policies(slot)
        assert again.trigger == "schedule" and again.id != event.id
        assert again.reason == f"'* * * * *' (UTC) was due at {slot.isoformat()}"


@pytest.mark.parametrize(
    ("origin", "due"),
    [
        (datetime(2030, 1, 15, tzinfo=UTC), datetime(2030, 1, 15, 2, tzinfo=UTC)),  # CET
        (datetime(2030, 7, 15, tzinfo=UTC), datetime(2030, 7, 15, 1, tzinfo=UTC)),  # CEST
    ],
)
async def test_a_schedule_keeps_its_time_zone(
    retraining_settings: Settings, origin: datetime, due: datetime
) -> None:
    """03:00 in Berlin is 02:00 UTC in winter, 01:00 UTC in summer."""
    async with running_app(retraining_settings) as app, client_for(app) as client:
        await add_deployment(app)
        trigger = {"type": "schedule", "cron": "0 3 * * *", "timezone": "Europe/Berlin"}
        await create_policy(client, [trigger])
        await set_schedule_origin(app, origin)

        [check] = (await dry_run(app, retraining_settings, due - timedelta(seconds=1))).checks
        assert check.fired is False and check.figures["due_at"] == due.isoformat()
        assert check.figures["timezone"] == "Europe/Berlin"
        [event] = await app.state.retraining.evaluate_policies(due)
        assert event.trigger == "schedule"
        assert event.reason == f"'0 3 * * *' (Europe/Berlin) was due at {due.isoformat()}"
        await finish(app, event.id)
        [check] = (await dry_run(app, retraining_settings, due + timedelta(hours=1))).checks
        assert check.fired is False
        assert check.figures["due_at"] == (due + timedelta(days=1)).isoformat()


# --------------------------------------------------------------------------- data volume


async def test_data_volume_counts_labelled_rows_since_the_last_retraining(
    retraining_settings: Settings,
) -> None:
    async with running_app(retraining_settings) as app, client_for(app) as client:
        await add_deployment(app)
        policy = await create_policy(client, [{"type": "data_volume", "min_new_labelled_rows": 5}])
        created = datetime.fromisoformat(policy["created_at"]).isoformat()
        now = datetime.now(UTC)
        # three requests of two rows each; the fourth is never labelled
        entries = [served(now, [1, 0]) for _ in range(4)]
        await log(app, *entries)
        await label(client, {entry.request_id: [1, 1] for entry in entries[:2]})

        [check] = (await dry_run(app, retraining_settings, now)).checks
        assert check.fired is False
        assert check.figures == {"new_rows": 4, "since": created}
        assert check.reason == f"4 new labelled row(s) since {created}, < 5"

        await label(client, {entries[2].request_id: [0, 0]})
        [check] = (await dry_run(app, retraining_settings, now)).checks
        assert check.fired is True and check.figures["new_rows"] == 6  # rows, not requests
        [event] = await app.state.retraining.evaluate_policies(now)
        assert event.trigger == "data_volume"
        assert event.reason == f"6 new labelled row(s) since {created}, ≥ 5"
        await finish(app, event.id)

        # counted from the retraining on: nothing new yet, then the last request's two rows
        [check] = (await dry_run(app, retraining_settings, now)).checks
        started = event.created_at.astimezone(UTC).isoformat()
        assert check.fired is False and check.figures == {"new_rows": 0, "since": started}
        await label(client, {entries[3].request_id: [1, 0]})
        [check] = (await dry_run(app, retraining_settings, now)).checks
        assert check.fired is False and check.figures["new_rows"] == 2


FEATURES = "/api/v1/features"


async def ingest(client: httpx.AsyncClient, view: str, n: int) -> None:
    at = datetime.now(UTC).isoformat()
    rows = [{"customer_id": i, "event_timestamp": at, "calls": i} for i in range(n)]
    answered = await client.post(
        f"{FEATURES}/views/{view}/ingest", json={"rows": rows}, headers=ADMIN
    )
    assert answered.status_code in (200, 201), answered.text


async def test_data_volume_counts_a_feature_views_new_rows(
    retraining_settings: Settings,
) -> None:
    async with running_app(retraining_settings) as app, client_for(app) as client:
        await add_deployment(app)
        entity = {"join_keys": [{"name": "customer_id", "type": "int64"}]}
        view = {"entities": ["customer"], "features": [{"name": "calls", "type": "int64"}]}
        for path, body in (
            ("entities/customer", entity),
            ("views/usage", view),
            ("views/other", view),
        ):
            answered = await client.put(f"{FEATURES}/{path}", json=body, headers=ADMIN)
            assert answered.status_code == 201, answered.text
        await ingest(client, "usage", 10)  # before the policy: not new to it

        trigger = {"type": "data_volume", "feature_view": "usage", "min_new_rows": 5}
        await create_policy(client, [trigger])
        await ingest(client, "usage", 3)
        await ingest(client, "other", 7)  # another view's rows do not count
        now = datetime.now(UTC)
        [check] = (await dry_run(app, retraining_settings, now)).checks
        assert check.fired is False and check.figures["new_rows"] == 3
        assert "3 new row(s) in feature view usage since" in check.reason

        await ingest(client, "usage", 2)
        [check] = (await dry_run(app, retraining_settings, now)).checks
        assert check.fired is True and check.figures["new_rows"] == 5
        [event] = await app.state.retraining.evaluate_policies(now)
        assert event.trigger == "data_volume"
        await finish(app, event.id)
        [check] = (await dry_run(app, retraining_settings, now)).checks
        assert check.fired is False and check.figures["new_rows"] == 0


# --------------------------------------------------------------------------- the guards

BAD_QUALITY = {
    "type": "performance_degradation",
    "threshold": 0.8,
    "window_hours": 72,
    "min_labelled": 10,
}


async def bad_quality(app: FastAPI, client: httpx.AsyncClient) -> datetime:
    """Ten wrong answers a minute ago: the trigger fires for the next three days."""
    now = datetime.now(UTC)
    await requests_scored(app, client, now - timedelta(minutes=1), right=0, wrong=10)
    return now


async def evaluate_api(client: httpx.AsyncClient) -> dict[str, Any]:
    answered = await client.post(f"{POLICIES}/bc-guard/evaluate", headers=ADMIN)
    assert answered.status_code == 200, answered.text
    return dict(answered.json())


async def test_cooldown_holds_automatic_triggers_but_not_a_manual_one(
    retraining_settings: Settings,
) -> None:
    async with running_app(retraining_settings) as app, client_for(app) as client:
        await add_deployment(app)
        await create_policy(client, [BAD_QUALITY], cooldown_minutes=30)
        now = await bad_quality(app, client)
        [first] = await app.state.retraining.evaluate_policies(now)
        await finish(app, first.id)
        until = first.created_at.astimezone(UTC) + timedelta(minutes=30)

        # the trigger still fires, but the cooldown holds it
        evaluation = await evaluate_api(client)
        assert evaluation["trigger"] == "performance_degradation"
        assert evaluation["checks"][0]["fired"] is True
        assert evaluation["would_start"] is False
        assert evaluation["blocked_by"] == f"cooldown until {until.isoformat()}"
        for minutes in (1, 29):
            held = await app.state.retraining.evaluate_policies(now + timedelta(minutes=minutes))
            assert held == []
        assert [e.id for e in await events(app)] == [first.id]

        [second] = await app.state.retraining.evaluate_policies(until + timedelta(seconds=1))
        assert second.trigger == "performance_degradation"
        await finish(app, second.id)

        # in the new cooldown a person starts one all the same
        triggered = await client.post(
            f"{POLICIES}/bc-guard/trigger", json={"reason": "new labels"}, headers=ADMIN
        )
        assert triggered.status_code == 202, triggered.text
        manual = triggered.json()
        assert manual["trigger"] == "manual" and manual["reason"] == "new labels"
        assert manual["status"] == "training"
        assert [link["stage"] for link in manual["chain"]] == [
            "trigger",
            "pipeline_run",
            "training_job",
        ]
        assert [str(e.id) for e in await events(app)] == [
            str(first.id),
            str(second.id),
            manual["id"],
        ]


async def test_the_daily_maximum(retraining_settings: Settings) -> None:
    async with running_app(retraining_settings) as app, client_for(app) as client:
        await add_deployment(app)
        await create_policy(client, [BAD_QUALITY], max_runs_per_day=2)
        now = await bad_quality(app, client)
        started = []
        for minutes in (0, 1):
            [event] = await app.state.retraining.evaluate_policies(now + timedelta(minutes=minutes))
            await finish(app, event.id)
            started.append(event)

        assert await app.state.retraining.evaluate_policies(now + timedelta(minutes=2)) == []
        evaluation = await dry_run(app, retraining_settings, now + timedelta(minutes=2))
        assert evaluation.trigger == "performance_degradation"
        assert evaluation.would_start is False
        assert evaluation.blocked_by == "2 retraining(s) in the last 24 h, the daily maximum"

        # a day after the second started, neither counts
        day_later = started[1].created_at.astimezone(UTC) + timedelta(days=1, seconds=1)
        assert (await dry_run(app, retraining_settings, day_later)).would_start is True
        [third] = await app.state.retraining.evaluate_policies(day_later)
        assert third.trigger == "performance_degradation"
        await finish(app, third.id)

        # a manual trigger is not counted against the maximum either
        triggered = await client.post(f"{POLICIES}/bc-guard/trigger", headers=ADMIN)
        assert triggered.status_code == 202, triggered.text
        assert triggered.json()["reason"].startswith("triggered by ")


async def test_one_retraining_in_flight_at_a_time(retraining_settings: Settings) -> None:
    async with running_app(retraining_settings) as app, client_for(app) as client:
        await add_deployment(app)
        await create_policy(client, [BAD_QUALITY])
        now = await bad_quality(app, client)
        [first] = await app.state.retraining.evaluate_policies(now)
        assert first.status == "training"

        later = now + timedelta(hours=1)
        assert await app.state.retraining.evaluate_policies(later) == []
        evaluation = await dry_run(app, retraining_settings, later)
        assert evaluation.checks[0].fired is True and evaluation.would_start is False
        assert evaluation.blocked_by == f"retraining {first.id} is in flight (training)"
        policy = (await client.get(f"{POLICIES}/bc-guard", headers=ADMIN)).json()
        assert policy["in_flight"] == str(first.id)

        refused = await client.post(f"{POLICIES}/bc-guard/trigger", headers=ADMIN)
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert str(first.id) in refused.json()["detail"]
        assert [e.id for e in await events(app)] == [first.id]

        await finish(app, first.id)
        [second] = await app.state.retraining.evaluate_policies(later)
        assert second.id != first.id


async def test_a_disabled_policy_starts_nothing_by_itself(retraining_settings: Settings) -> None:
    async with running_app(retraining_settings) as app, client_for(app) as client:
        await add_deployment(app)
        await create_policy(client, [BAD_QUALITY], enabled=False)
        now = await bad_quality(app, client)
        assert await app.state.retraining.evaluate_policies(now) == []
        evaluation = await dry_run(app, retraining_settings, now)
        assert evaluation.checks[0].fired is True
        assert evaluation.would_start is False
        assert evaluation.blocked_by == "the policy is disabled"

        enabled = await client.post(f"{POLICIES}/bc-guard/enable", headers=ADMIN)
        assert enabled.status_code == 200 and enabled.json()["enabled"] is True
        [event] = await app.state.retraining.evaluate_policies(now)
        await finish(app, event.id)

        disabled = await client.post(f"{POLICIES}/bc-guard/disable", headers=ADMIN)
        assert disabled.status_code == 200 and disabled.json()["enabled"] is False
        assert await app.state.retraining.evaluate_policies(now + timedelta(hours=2)) == []
        # a person still can
        triggered = await client.post(f"{POLICIES}/bc-guard/trigger", headers=ADMIN)
        assert triggered.status_code == 202, triggered.text
        assert len(await events(app)) == 2
