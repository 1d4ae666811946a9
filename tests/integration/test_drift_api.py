"""Drift end to end in the app: a reference profiled from the training data, traffic served by
a real model and logged, reports on a stable and on a shifted window, scheduled checks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mlops.core.settings import Settings
from mlops.monitoring.drift_schedule import DriftScheduler
from tests.conftest import ADMIN, client_for, running_app
from tests.integration.test_deployments import MODEL, until
from tests.integration.test_prediction_log import logged
from tests.model_registry import register, rows

pytestmark = pytest.mark.slow
SHIFTED = {"mean radius", "mean texture"}


def shifted(records: list[dict[str, float]]) -> list[dict[str, float]]:
    return [
        {**r, "mean radius": r["mean radius"] * 1.6, "mean texture": r["mean texture"] + 8}
        for r in records
    ]


async def serve(client: httpx.AsyncClient, batches: list[list[dict[str, float]]]) -> datetime:
    for batch in batches:
        answered = await client.post(
            "/api/v1/deployments/bc/predict", json={"instances": batch}, headers=ADMIN
        )
        assert answered.status_code == 200, answered.text
    await asyncio.sleep(0.01)
    return datetime.now(UTC)


async def report(client: httpx.AsyncClient, **window: Any) -> httpx.Response:
    body = {key: value.isoformat() for key, value in window.items()}
    return await client.post("/api/v1/monitoring/drift/bc/reports", json=body, headers=ADMIN)


async def test_reports_flag_a_shifted_window_and_not_a_stable_one(settings: Settings) -> None:
    register(settings.effective_mlflow_uri, MODEL, alias="champion")
    async with running_app(settings) as app, client_for(app) as client:
        created = await client.post(
            "/api/v1/deployments",
            json={"name": "bc", "model": {"name": MODEL, "alias": "champion"}},
            headers=ADMIN,
        )
        assert created.status_code == 202, created.text
        await until(client, "bc", lambda d: d["state"] == "ready")
        path = "/api/v1/monitoring/drift/bc"

        no_reference = await report(client)
        assert no_reference.status_code == 409, no_reference.text
        for body, field in (
            ({"source": {}}, "source"),
            ({"source": {"dataset": {"uri": "sklearn://nope"}}}, "source.dataset.uri"),
            (
                {
                    "source": {"dataset": {"uri": "sklearn://breast_cancer"}},
                    "settings": {"thresholds": {"features": {"no such": {"psi": 0.3}}}},
                },
                "settings.thresholds",
            ),
        ):
            refused = await client.put(f"{path}/reference", json=body, headers=ADMIN)
            assert refused.status_code == 422, refused.text
            assert refused.json()["errors"][0]["field"] == field, refused.text

        reference = await client.put(
            f"{path}/reference",
            json={
                "source": {"dataset": {"uri": "sklearn://breast_cancer", "label_column": "target"}}
            },
            headers=ADMIN,
        )
        assert reference.status_code == 201, reference.text
        assert reference.json()["rows"] == 569
        roles = {f["name"]: f["role"] for f in reference.json()["features"]}
        assert len(roles) == 31 and roles["prediction"] == "prediction"
        assert (await client.get(f"{path}/reference", headers=ADMIN)).json()["id"] == (
            reference.json()["id"]
        )
        empty = await report(client)
        assert empty.status_code == 422 and "no logged predictions" in empty.text

        began = datetime.now(UTC)
        stable_end = await serve(client, [rows(100), rows(101), rows(102)])
        drifted_end = await serve(
            client, [shifted(rows(103)), shifted(rows(104)), shifted(rows(105))]
        )
        await logged(client, 6)

        stable = await report(client, since=began, until=stable_end)
        assert stable.status_code == 201, stable.text
        assert stable.json()["current_rows"] == 303
        assert stable.json()["drifted_features"] == [], stable.json()["drifted_features"]
        assert stable.json()["dataset_drift"] is False and stable.json()["trigger"] == "on_demand"

        moved = await report(client, since=stable_end, until=drifted_end)
        assert moved.status_code == 201, moved.text
        assert set(moved.json()["drifted_features"]) == SHIFTED, moved.json()["drifted_features"]
        by_name = {f["name"]: f for f in moved.json()["features"]}
        assert by_name["mean radius"]["reason"] and by_name["mean radius"]["p_adjusted"] < 0.05
        assert by_name["worst area"]["drifted"] is False

        listed = await client.get(f"{path}/reports", headers=ADMIN)
        assert listed.json()["total"] == 2
        flagged = await client.get(f"{path}/reports", params={"drifted": "true"}, headers=ADMIN)
        assert [r["id"] for r in flagged.json()["items"]] == [moved.json()["id"]]
        one = await client.get(f"{path}/reports/{moved.json()['id']}", headers=ADMIN)
        assert one.json()["drifted_features"] == moved.json()["drifted_features"]
        page = await client.get(
            f"{path}/reports/{moved.json()['id']}", params={"format": "html"}, headers=ADMIN
        )
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "mean radius" in page.text and "<svg" in page.text
        missing = await client.get(f"{path}/reports/{began.strftime('%Y')}", headers=ADMIN)
        assert missing.status_code == 422  # not a report id

        metrics = (await client.get("/metrics")).text
        assert 'mlops_drift_detected{deployment="bc",feature="mean radius"} 1.0' in metrics
        assert 'mlops_drift_detected{deployment="bc",feature="worst area"} 0.0' in metrics

        scheduled = await client.put(
            f"{path}/reference",
            json={
                "source": {"window": {"since": began.isoformat(), "until": stable_end.isoformat()}},
                "settings": {"check_every_minutes": 5, "window_minutes": 60},
            },
            headers=ADMIN,
        )
        assert scheduled.status_code == 201, scheduled.text
        assert scheduled.json()["rows"] == 303
        checks: DriftScheduler = app.state.drift_checks
        now = datetime.now(UTC)
        assert await checks.run_due(now) == 1
        assert await checks.run_due(now + timedelta(minutes=1)) == 0  # not due yet
        assert await checks.run_due(now + timedelta(minutes=6)) == 1
        assert await checks.run_due(now + timedelta(hours=3)) == 0  # an empty window: no report
        triggers = [
            r["trigger"]
            for r in (await client.get(f"{path}/reports", headers=ADMIN)).json()["items"]
        ]
        assert triggers.count("schedule") == 2
