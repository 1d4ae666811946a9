"""Alerting end to end in the app: rules on figures of a deployment's prediction log, quality
and drift, evaluated at chosen times, notifying a real local webhook receiver; channels with
their secrets masked and their test messages; the state and history APIs."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from mlops.core.settings import Settings
from mlops.deployments.models import Deployment
from mlops.deployments.runtime import ServedPrediction
from mlops.monitoring.alerting.evaluator import AlertEvaluator
from mlops.monitoring.channels import verify_signature
from mlops.monitoring.models import DriftReference, DriftReportRecord, LoggedPrediction
from tests.conftest import ADMIN, client_for, free_port, running_app
from tests.integration import test_alert_channels
from tests.integration.test_alert_channels import (
    FAST,
    HEADER_TOKEN,
    SLACK_TOKEN_PATH,
    SMTP_PASSWORD,
    WEBHOOK_SECRET,
    Receiver,
    Reply,
)

ALERTS = "/api/v1/monitoring/alerts"
SECRETS = (WEBHOOK_SECRET, HEADER_TOKEN, SLACK_TOKEN_PATH, "slackToken", SMTP_PASSWORD)
T0 = datetime(2030, 1, 31, 12, 0, tzinfo=UTC)  # evaluations run at chosen times around it
receiver = test_alert_channels.receiver  # the fixture: a real HTTP receiver on 127.0.0.1


@pytest.fixture
def alert_settings(settings_factory: Any) -> Settings:
    """The app's own evaluation loop idle: the tests call ``evaluate(now)`` themselves."""
    settings: Settings = settings_factory(alert_evaluation_seconds=3600)
    return settings


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def served(at: datetime, *, latency: float = 10.0, error: str | None = None) -> ServedPrediction:
    return ServedPrediction(
        request_id=uuid.uuid4().hex,
        correlation_id=None,
        deployment="bc",
        variant="a",
        model_version="1",
        columns=("x",),
        rows=[[1.0]],
        predictions=[] if error else [1],
        latency_ms=latency,
        at=at,
        error=error,
    )


async def log(app: FastAPI, *entries: ServedPrediction) -> None:
    """Through the prediction log, then until the rows are in (its own loop may be the one
    that writes them)."""
    async with app.state.database.sessionmaker() as session:
        before = await session.scalar(select(func.count()).select_from(LoggedPrediction))
    for entry in entries:
        app.state.prediction_log.record(entry)
    await app.state.prediction_log.flush()
    deadline = time.monotonic() + 10
    while True:
        async with app.state.database.sessionmaker() as session:
            count = await session.scalar(select(func.count()).select_from(LoggedPrediction))
        if count == (before or 0) + len(entries):
            return
        assert time.monotonic() < deadline, count
        await asyncio.sleep(0.05)


async def add_deployment(app: FastAPI) -> uuid.UUID:
    """A deployment row with no model behind it: figures come from the log written here."""
    deployment = Deployment(
        name="bc",
        model_name="bc-rf",
        strategy="direct",
        settings={},
        state="ready",
        created_by="tests",
    )
    async with app.state.database.sessionmaker() as session, session.begin():
        session.add(deployment)
    return deployment.id


async def add_drift_report(
    app: FastAPI,
    deployment_id: uuid.UUID,
    psi: float = 0.4,
    *,
    drifted: Sequence[str] = ("x",),
    share: float = 0.5,
    dataset_drift: bool = True,
    created_at: datetime | None = None,
) -> uuid.UUID:
    """A stored drift report over features x, y, z, w: ``drifted`` flagged (with ``psi``), the
    others not (psi 0.01)."""
    created_at = created_at or datetime.now(UTC)
    async with app.state.database.sessionmaker() as session, session.begin():
        reference = DriftReference(
            deployment_id=deployment_id,
            source={},
            settings={},
            profile={},
            rows=1,
            created_by="tests",
        )
        session.add(reference)
        await session.flush()
        record = DriftReportRecord(
            deployment_id=deployment_id,
            reference_id=reference.id,
            since=created_at - timedelta(hours=1),
            until=created_at,
            trigger="on_demand",
            dataset_drift=dataset_drift,
            prediction_drift=None,
            drifted_count=len(drifted),
            report={
                "dataset_drift": dataset_drift,
                "drifted_share": share,
                "features": [
                    {
                        "name": name,
                        "drifted": name in drifted,
                        "psi": psi if name in drifted else 0.01,
                    }
                    for name in ("x", "y", "z", "w")
                ],
            },
            created_at=created_at,
        )
        session.add(record)
    return record.id


async def create(client: httpx.AsyncClient, what: str, body: dict[str, Any]) -> dict[str, Any]:
    created = await client.post(f"{ALERTS}/{what}", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    return dict(created.json())


def webhook_channel(url: str, name: str = "hook") -> dict[str, Any]:
    return {
        "name": name,
        "config": {
            "kind": "webhook",
            "url": f"{url}/hooks/alerts",
            "secret": WEBHOOK_SECRET,
            "headers": {"Authorization": HEADER_TOKEN},
        },
    }


async def alerts(client: httpx.AsyncClient, **query: str) -> dict[str, dict[str, Any]]:
    page = await client.get(ALERTS, params=query, headers=ADMIN)
    assert page.status_code == 200, page.text
    return {item["rule"]: item for item in page.json()["items"]}


def of(events: list[Any], rule: str) -> list[str]:
    return [event.status for event in events if event.rule == rule]


async def test_a_rule_fires_after_its_duration_notifies_once_and_resolves(
    alert_settings: Settings, receiver: Receiver
) -> None:
    async with running_app(alert_settings) as app, client_for(app) as client:
        deployment_id = await add_deployment(app)
        evaluator: AlertEvaluator = app.state.alert_evaluator
        evaluator.policy = FAST
        await create(client, "channels", webhook_channel(receiver.url))
        rule = {"deployment": "bc", "threshold": 0.2, "window_minutes": 5, "channels": ["hook"]}
        await create(
            client,
            "rules",
            {
                **rule,
                "name": "bc-errors",
                "figure": "error_rate",
                "condition": ">",
                "for_minutes": 2,
                "severity": "critical",
                "description": "Too many failed predictions",
            },
        )
        for name, figure, condition, threshold in (
            ("bc-latency", "latency_p95_ms", ">", 45),
            ("bc-volume", "prediction_volume", "<", 1),
            ("bc-accuracy", "quality.accuracy", "<", 0.9),
            ("bc-psi", "drift.feature.x.psi", ">", 0.2),
        ):
            await create(
                client,
                "rules",
                {
                    "name": name,
                    "deployment": "bc",
                    "figure": figure,
                    "condition": condition,
                    "threshold": threshold,
                    "window_minutes": 5,
                },
            )
        # a minute before T0: 10 requests, 5 failed, the others 10 to 50 ms
        await log(
            app,
            *[served(minutes(-1), latency=1, error="ValueError: bad row") for _ in range(5)],
            *[served(minutes(-1), latency=ms) for ms in (10, 20, 30, 40, 50)],
        )

        events = await evaluator.evaluate(T0)
        assert of(events, "bc-errors") == ["pending"]
        assert of(events, "bc-latency") == ["firing"]  # for_minutes 0: at once
        assert of(events, "bc-volume") == of(events, "bc-accuracy") == of(events, "bc-psi") == []
        now = await alerts(client)
        assert now["bc-errors"]["state"] == "pending" and now["bc-errors"]["value"] == 0.5
        assert now["bc-latency"]["value"] == 50  # nearest rank of the 5 successful requests
        assert now["bc-volume"]["state"] == "ok" and now["bc-volume"]["value"] == 10
        for no_data in ("bc-accuracy", "bc-psi"):  # no labels, no drift report
            assert now[no_data]["state"] == "no_data" and now[no_data]["value"] is None
        assert set(await alerts(client, state="no_data")) == {"bc-accuracy", "bc-psi"}
        assert set(await alerts(client, state="firing")) == {"bc-latency"}
        assert receiver.requests == []  # pending notifies nobody

        assert of(await evaluator.evaluate(minutes(1)), "bc-errors") == []  # 1 of 2 minutes
        receiver.script(Reply(503, body=b"restarting"))  # the first POST fails, transiently
        events = await evaluator.evaluate(minutes(2))
        [firing] = [event for event in events if event.rule == "bc-errors"]
        assert firing.status == "firing" and firing.value == 0.5 and firing.threshold == 0.2
        [delivery] = firing.deliveries or []
        assert delivery.channel == "hook" and delivery.outcome == "delivered"
        assert delivery.attempt_count == 2 and "HTTP 503" in str(delivery.attempts[0].error)
        assert len(receiver.requests) == 2
        for request in receiver.requests:
            headers = request.headers
            assert verify_signature(
                WEBHOOK_SECRET, headers["x-mlops-timestamp"], request.body,
                headers["x-mlops-signature"],
            )  # fmt: skip
        sent = receiver.requests[-1].json()
        assert sent["rule"] == "bc-errors" and sent["status"] == "firing"
        assert sent["severity"] == "critical" and sent["value"] == 0.5
        assert sent["labels"] == {"deployment": "bc", "figure": "error_rate"}
        assert "Too many failed predictions" in sent["summary"]
        assert sent["fingerprint"] == firing.fingerprint

        await add_drift_report(app, deployment_id, psi=0.4)
        events = await evaluator.evaluate(minutes(3))
        assert of(events, "bc-errors") == []  # still firing: not sent again
        assert of(events, "bc-psi") == ["firing"]
        assert len(receiver.requests) == 2
        metrics = (await client.get("/metrics")).text
        gauge = 'mlops_alerts_firing{deployment="bc",rule="bc-errors",severity="critical"}'
        assert f"{gauge} 1.0" in metrics
        assert 'mlops_alert_notifications_total{channel="hook",outcome="delivered"}' in metrics

        # No request in the window: no data, and the alert neither resolves nor notifies;
        # a volume of 0 is a value, though.
        events = await evaluator.evaluate(minutes(10))
        assert of(events, "bc-errors") == [] and of(events, "bc-volume") == ["firing"]
        held = (await alerts(client))["bc-errors"]
        assert held["state"] == "no_data" and held["held_state"] == "firing"
        assert held["no_data_since"] is not None
        assert f"{gauge} 1.0" in (await client.get("/metrics")).text
        assert len(receiver.requests) == 2

        await log(app, *[served(minutes(10.5)) for _ in range(20)])
        events = await evaluator.evaluate(minutes(11))
        [resolved] = [event for event in events if event.rule == "bc-errors"]
        assert resolved.status == "resolved" and resolved.value == 0
        assert resolved.fingerprint == firing.fingerprint
        assert [d.outcome for d in resolved.deliveries or []] == ["delivered"]
        assert len(receiver.requests) == 3
        done = receiver.requests[-1].json()
        assert done["status"] == "resolved" and done["fingerprint"] == firing.fingerprint
        assert done["started_at"] == minutes(2).isoformat().replace("+00:00", "Z")
        assert done["resolved_at"] == minutes(11).isoformat().replace("+00:00", "Z")
        assert (await alerts(client))["bc-errors"]["state"] == "ok"
        assert f"{gauge} 0.0" in (await client.get("/metrics")).text
        assert of(await evaluator.evaluate(minutes(12)), "bc-errors") == []
        assert len(receiver.requests) == 3

        history = await client.get(f"{ALERTS}/history", params={"rule": "bc-errors"}, headers=ADMIN)
        assert history.status_code == 200, history.text
        items = history.json()["items"]
        assert [e["status"] for e in items] == ["resolved", "firing", "pending"]  # newest first
        assert [e["created_at"] for e in items] == [
            moment.isoformat().replace("+00:00", "Z") for moment in (minutes(11), minutes(2), T0)
        ]
        assert items[1]["value"] == 0.5 and items[1]["threshold"] == 0.2
        assert items[1]["deliveries"][0]["outcome"] == "delivered"
        assert items[1]["deliveries"][0]["attempt_count"] == 2
        assert items[0]["deliveries"][0]["attempt_count"] == 1
        assert items[2]["deliveries"] is None
        firings = await client.get(
            f"{ALERTS}/history", params={"status": "firing", "limit": 1}, headers=ADMIN
        )
        assert firings.json()["total"] == 4  # bc-latency, bc-errors, bc-psi, bc-volume
        assert firings.json()["items"][0]["rule"] == "bc-volume"

        # A firing rule disabled resolves at the next evaluation; then it is no alert at all.
        disabled = await client.patch(
            f"{ALERTS}/rules/bc-psi", json={"enabled": False}, headers=ADMIN
        )
        assert disabled.status_code == 200 and disabled.json()["enabled"] is False
        assert disabled.json()["status"]["state"] == "firing"  # until the next evaluation
        events = await evaluator.evaluate(minutes(13))
        assert of(events, "bc-psi") == ["resolved"]
        assert [e.reason for e in events if e.rule == "bc-psi"] == ["the rule was disabled"]
        assert "bc-psi" not in await alerts(client)

        # History outlives its rule.
        gone = await client.delete(f"{ALERTS}/rules/bc-errors", headers=ADMIN)
        assert gone.status_code == 204
        kept = await client.get(f"{ALERTS}/history", params={"rule": "bc-errors"}, headers=ADMIN)
        assert [e["status"] for e in kept.json()["items"]] == ["resolved", "firing", "pending"]
        assert of(await evaluator.evaluate(minutes(14)), "bc-errors") == []
        assert gauge not in (await client.get("/metrics")).text


async def test_channels_mask_secrets_and_send_test_messages(
    alert_settings: Settings, receiver: Receiver
) -> None:
    async with running_app(alert_settings) as app, client_for(app) as client:
        responses = [
            await client.post(
                f"{ALERTS}/channels", json=webhook_channel(receiver.url), headers=ADMIN
            )
        ]
        assert responses[0].status_code == 201, responses[0].text
        shown = responses[0].json()["config"]
        assert shown["secret"] == "***" and shown["headers"] == {"Authorization": "***"}
        assert shown["url"] == f"{receiver.url}/hooks/alerts"
        slack = {
            "name": "slack",
            "config": {"kind": "slack", "webhook_url": f"{receiver.url}{SLACK_TOKEN_PATH}"},
        }
        email = {
            "name": "mail",
            "description": "The team's inbox",
            "config": {
                "kind": "email",
                "host": "127.0.0.1",
                "port": free_port(),
                "sender": "alerts@example.com",
                "recipients": ["team@example.com"],
                "username": "alerts",
                "password": SMTP_PASSWORD,
            },
        }
        for body in (slack, email):
            responses.append(await client.post(f"{ALERTS}/channels", json=body, headers=ADMIN))
            assert responses[-1].status_code == 201, responses[-1].text
        assert responses[1].json()["config"]["webhook_url"] == "http://127.0.0.1/***"
        assert responses[2].json()["config"]["password"] == "***"
        responses.append(await client.get(f"{ALERTS}/channels", headers=ADMIN))
        assert [c["name"] for c in responses[-1].json()["items"]] == ["hook", "mail", "slack"]
        responses.append(
            await client.get(f"{ALERTS}/channels", params={"kind": "email"}, headers=ADMIN)
        )
        assert [c["name"] for c in responses[-1].json()["items"]] == ["mail"]
        for name in ("hook", "slack", "mail"):
            responses.append(await client.get(f"{ALERTS}/channels/{name}", headers=ADMIN))
            assert responses[-1].status_code == 200
        for response in responses:
            assert not any(secret in response.text for secret in SECRETS), response.text

        # The secrets are stored, not lost: the test message is signed with them.
        tested = await client.post(f"{ALERTS}/channels/hook/test", headers=ADMIN)
        assert tested.status_code == 200, tested.text
        assert tested.json()["outcome"] == "delivered" and tested.json()["attempt_count"] == 1
        [request] = receiver.requests
        assert request.json()["status"] == "test"
        assert request.headers["authorization"] == HEADER_TOKEN
        assert verify_signature(
            WEBHOOK_SECRET, request.headers["x-mlops-timestamp"], request.body,
            request.headers["x-mlops-signature"],
        )  # fmt: skip
        slack_test = await client.post(f"{ALERTS}/channels/slack/test", headers=ADMIN)
        assert slack_test.status_code == 200, slack_test.text
        assert receiver.requests[-1].path == SLACK_TOKEN_PATH

        dead = webhook_channel(f"http://127.0.0.1:{free_port()}", name="dead")
        await create(client, "channels", dead)
        failed = await client.post(f"{ALERTS}/channels/dead/test", headers=ADMIN)
        assert failed.status_code == 502, failed.text
        assert failed.headers["content-type"].startswith("application/problem+json")
        assert "could not be reached" in failed.json()["detail"]
        assert "exhausted after 2 attempt(s)" in failed.json()["detail"]
        assert not any(secret in failed.text for secret in SECRETS)
        missing = await client.post(f"{ALERTS}/channels/nope/test", headers=ADMIN)
        assert missing.status_code == 404

        for body, field in (
            ({**webhook_channel(receiver.url), "name": "Bad_Name"}, "name"),
            ({"name": "x", "config": {"kind": "pager"}}, "config"),
            (
                {"name": "x", "config": {**dead["config"], "secret": "short-secret"}},
                "config.webhook.secret",
            ),
            (
                {"name": "x", "config": {"kind": "slack", "webhook_url": "ftp://x"}},
                "config.slack.webhook_url",
            ),
        ):
            refused = await client.post(f"{ALERTS}/channels", json=body, headers=ADMIN)
            assert refused.status_code == 422, refused.text
            assert field in [e["field"] for e in refused.json()["errors"]], refused.text
            assert "short-secret" not in refused.text
        again = await client.post(f"{ALERTS}/channels", json=dead, headers=ADMIN)
        assert again.status_code == 409


async def test_rules_are_validated_edited_and_deleted(
    alert_settings: Settings, receiver: Receiver
) -> None:
    async with running_app(alert_settings) as app, client_for(app) as client:
        await add_deployment(app)
        await create(client, "channels", webhook_channel(receiver.url))
        rule = {
            "name": "bc-slow",
            "deployment": "bc",
            "figure": "latency_p95_ms",
            "condition": ">=",
            "threshold": 250,
            "channels": ["hook"],
        }
        for changes, field in (
            ({"channels": ["hook", "nope"]}, "channels.1"),
            ({"channels": ["hook", "hook"]}, "channels"),
            ({"condition": "!="}, "condition"),
            ({"figure": "quality.bogus"}, "figure"),
            ({"figure": "drift.feature."}, "figure"),
            ({"deployment": "ghost"}, "deployment"),
            ({"figure": "drift.share", "variant": "a"}, "variant"),
            ({"severity": "page"}, "severity"),
            ({"for_minutes": -1}, "for_minutes"),
            ({"name": "Not A Label"}, "name"),
        ):
            refused = await client.post(f"{ALERTS}/rules", json={**rule, **changes}, headers=ADMIN)
            assert refused.status_code == 422, (changes, refused.text)
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert [e["field"] for e in refused.json()["errors"]] == [field], refused.text
        bogus = await client.post(
            f"{ALERTS}/rules", json={**rule, "figure": "quality.bogus"}, headers=ADMIN
        )
        assert "quality.<accuracy|" in json.dumps(bogus.json())  # the valid forms are listed

        created = await create(client, "rules", rule)
        assert created["channels"] == ["hook"] and created["severity"] == "warning"
        assert created["status"]["state"] == "ok" and created["for_minutes"] == 0
        duplicate = await client.post(f"{ALERTS}/rules", json=rule, headers=ADMIN)
        assert duplicate.status_code == 409

        for patch, field in (
            ({"threshold": None}, "threshold"),
            ({"channels": ["nope"]}, "channels.0"),
            ({"name": "renamed"}, "name"),
        ):
            refused = await client.patch(f"{ALERTS}/rules/bc-slow", json=patch, headers=ADMIN)
            assert refused.status_code == 422, refused.text
            assert [e["field"] for e in refused.json()["errors"]] == [field], refused.text
        edited = await client.patch(
            f"{ALERTS}/rules/bc-slow",
            json={"threshold": 500, "enabled": False, "channels": []},
            headers=ADMIN,
        )
        assert edited.status_code == 200, edited.text
        assert edited.json()["threshold"] == 500 and edited.json()["channels"] == []
        assert edited.json()["figure"] == "latency_p95_ms"  # kept
        listed = await client.get(f"{ALERTS}/rules", params={"enabled": "false"}, headers=ADMIN)
        assert [r["name"] for r in listed.json()["items"]] == ["bc-slow"]
        listed = await client.get(f"{ALERTS}/rules", params={"deployment": "x"}, headers=ADMIN)
        assert listed.json()["total"] == 0

        # A channel in use is not deleted; once the rule lets it go, it is.
        await client.patch(f"{ALERTS}/rules/bc-slow", json={"channels": ["hook"]}, headers=ADMIN)
        in_use = await client.delete(f"{ALERTS}/channels/hook", headers=ADMIN)
        assert in_use.status_code == 409 and "bc-slow" in in_use.json()["detail"]
        deleted = await client.delete(f"{ALERTS}/rules/bc-slow", headers=ADMIN)
        assert deleted.status_code == 204
        assert (await client.get(f"{ALERTS}/rules/bc-slow", headers=ADMIN)).status_code == 404
        assert (await client.delete(f"{ALERTS}/channels/hook", headers=ADMIN)).status_code == 204
        assert (await client.get(f"{ALERTS}/channels/hook", headers=ADMIN)).status_code == 404


async def test_deliveries_cut_short_by_a_stop_are_marked_interrupted(
    alert_settings: Settings, receiver: Receiver
) -> None:
    async with running_app(alert_settings) as app, client_for(app) as client:
        await add_deployment(app)
        evaluator: AlertEvaluator = app.state.alert_evaluator
        await create(client, "channels", webhook_channel(receiver.url))
        await create(
            client,
            "rules",
            {
                "name": "bc-latency",
                "deployment": "bc",
                "figure": "latency_p95_ms",
                "condition": ">",
                "threshold": 5,
                "window_minutes": 5,
                "channels": ["hook"],
            },
        )
        await log(app, served(minutes(-1), latency=50))
        events = await evaluator.evaluate(T0, wait=False)
        assert of(events, "bc-latency") == ["firing"]
        await evaluator.stop()  # the delivery task is cancelled before it records an outcome
        history = (await client.get(f"{ALERTS}/history", headers=ADMIN)).json()["items"]
        assert history[0]["deliveries"][0]["outcome"] == "sending"

        assert await evaluator.settle_interrupted() == 1
        history = (await client.get(f"{ALERTS}/history", headers=ADMIN)).json()["items"]
        assert history[0]["deliveries"][0]["outcome"] == "interrupted"
        assert await evaluator.settle_interrupted() == 0
