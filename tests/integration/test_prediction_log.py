"""The prediction log, ground truth and model quality, end to end in the app: a real model
served, its predictions written by the log's batches, truth reported by request and by
correlation id, quality scored against scikit-learn's own metrics."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sklearn.metrics import accuracy_score, f1_score

from mlops.core.settings import Settings
from mlops.monitoring import prediction_log
from mlops.monitoring.prediction_log import LOG_DROPPED, PredictionLog
from tests.conftest import ADMIN, client_for, running_app
from tests.integration.test_deployments import MODEL, predict, until
from tests.model_registry import data, register, rows

pytestmark = pytest.mark.slow


async def logged(client: httpx.AsyncClient, count: int, **query: str) -> list[dict[str, Any]]:
    """The deployment's logged predictions once there are ``count`` (the log writes in
    batches every half second)."""
    deadline = time.monotonic() + 30
    while True:
        page = await client.get(
            "/api/v1/monitoring/predictions",
            params={"deployment": "bc", "limit": 200, **query},
            headers=ADMIN,
        )
        assert page.status_code == 200, page.text
        if page.json()["total"] >= count:
            return list(page.json()["items"])
        assert time.monotonic() < deadline, page.json()["total"]
        await asyncio.sleep(0.2)


def records(start: int, n: int) -> tuple[list[dict[str, float]], list[int]]:
    features, labels = data()
    rows = features.iloc[start : start + n]
    return [{k: float(v) for k, v in r.items()} for r in rows.to_dict("records")], [
        int(v) for v in labels.iloc[start : start + n]
    ]


async def test_predictions_are_logged_and_scored_against_the_truth(settings: Settings) -> None:
    register(settings.effective_mlflow_uri, MODEL, alias="champion")
    async with running_app(settings) as app, client_for(app) as client:
        created = await client.post(
            "/api/v1/deployments",
            json={"name": "bc", "model": {"name": MODEL, "alias": "champion"}},
            headers=ADMIN,
        )
        assert created.status_code == 202, created.text
        await until(client, "bc", lambda d: d["state"] == "ready")

        answers: dict[str, list[Any]] = {}
        truth: dict[str, list[int]] = {}
        for start in range(0, 40):  # 40 one-row requests
            rows, labels = records(start, 1)
            answered = await predict(client, "bc", rows)
            assert answered.status_code == 200, answered.text
            answers[answered.json()["request_id"]] = answered.json()["predictions"]
            truth[answered.json()["request_id"]] = labels
        rows, order_labels = records(100, 3)  # one request of 3 rows, by correlation id
        by_header = await client.post(
            "/api/v1/deployments/bc/predict",
            json={"instances": rows},
            headers={**ADMIN, "X-Correlation-Id": "order-1841"},
        )
        assert by_header.status_code == 200, by_header.text
        too_long = await client.post(
            "/api/v1/deployments/bc/predict",
            json={"instances": rows},
            headers={**ADMIN, "X-Correlation-Id": "x" * 201},
        )
        assert too_long.status_code == 422, too_long.text
        assert too_long.json()["errors"][0]["field"] == "x-correlation-id"

        entries = await logged(client, 41)
        assert len(entries) == 41
        by_id = {entry["request_id"]: entry for entry in entries}
        assert set(answers) < set(by_id)
        one = by_id[next(iter(answers))]
        assert one["variant"] == "v1" and one["model_version"] == "1"
        assert one["predictions"] == answers[one["request_id"]]
        assert one["features"]["columns"][0] == "mean radius"
        assert len(one["features"]["rows"]) == 1 and len(one["features"]["rows"][0]) == 30
        assert one["latency_ms"] > 0 and one["labels"] is None
        grouped = [e for e in entries if e["correlation_id"] == "order-1841"]
        assert len(grouped) == 1 and len(grouped[0]["predictions"]) == 3

        # truth for the first 30 single-row requests, the 3-row one, and an unknown id
        reported = list(answers)[:30]
        items: list[dict[str, Any]] = [
            {"request_id": request_id, "label": truth[request_id][0]} for request_id in reported
        ]
        items += [
            {"correlation_id": "order-1841", "labels": order_labels},
            {"request_id": "no-such-request", "label": 1},
        ]
        accepted = await client.post(
            "/api/v1/monitoring/ground-truth", json={"items": items}, headers=ADMIN
        )
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {
            "items": 32,
            "matched": 31,
            "predictions_labelled": 31,
            "unmatched": ["no-such-request"],
        }

        wrong_count = await client.post(
            "/api/v1/monitoring/ground-truth",
            json={
                "items": [
                    {"request_id": list(answers)[35], "label": 1},
                    {"correlation_id": "order-1841", "labels": [1, 0]},
                ]
            },
            headers=ADMIN,
        )
        assert wrong_count.status_code == 422, wrong_count.text
        assert wrong_count.json()["errors"][0]["field"] == "items.1.labels"
        both_keys = await client.post(
            "/api/v1/monitoring/ground-truth",
            json={"items": [{"request_id": "a", "correlation_id": "b", "label": 1}]},
            headers=ADMIN,
        )
        assert both_keys.status_code == 422, both_keys.text

        quality = await client.get("/api/v1/monitoring/quality/bc", headers=ADMIN)
        assert quality.status_code == 200, quality.text
        (variant,) = quality.json()["variants"]
        expected = [truth[r][0] for r in reported] + order_labels
        predicted = [answers[r][0] for r in reported] + by_header.json()["predictions"]
        assert variant["predictions"] == 43 and variant["labelled"] == 33  # 35 not written
        assert variant["task"] == "classification"
        assert variant["metrics"]["accuracy"] == pytest.approx(accuracy_score(expected, predicted))
        assert variant["metrics"]["f1"] == pytest.approx(f1_score(expected, predicted))
        assert quality.json()["overall"] is None  # one variant

        empty = await client.get(
            "/api/v1/monitoring/quality/bc",
            params={"until": (datetime.now(UTC) - timedelta(days=2)).isoformat()},
            headers=ADMIN,
        )
        assert empty.status_code == 200 and empty.json()["variants"] == []
        backwards = await client.get(
            "/api/v1/monitoring/quality/bc",
            params={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            headers=ADMIN,
        )
        assert backwards.status_code == 422 and backwards.json()["errors"][0]["field"] == "since"
        missing = await client.get("/api/v1/monitoring/quality/nope", headers=ADMIN)
        assert missing.status_code == 404

        log: PredictionLog = app.state.prediction_log
        assert await log.prune(datetime.now(UTC) + timedelta(days=29)) == 0
        assert await log.prune(datetime.now(UTC) + timedelta(days=31)) == 41
        left = await client.get("/api/v1/monitoring/quality/bc", headers=ADMIN)
        assert left.json()["variants"] == []


async def test_failed_predictions_are_logged_with_their_error(settings: Settings) -> None:
    register(settings.effective_mlflow_uri, MODEL, kind="flaky", alias="champion")
    async with running_app(settings) as app, client_for(app) as client:
        created = await client.post(
            "/api/v1/deployments",
            json={"name": "bc", "model": {"name": MODEL, "alias": "champion"}},
            headers=ADMIN,
        )
        assert created.status_code == 202, created.text
        await until(client, "bc", lambda d: d["state"] == "ready")
        failed = await predict(client, "bc", rows(1, large=True))
        assert failed.status_code == 500, failed.text
        served = await predict(client, "bc", rows(1, large=False))
        assert served.status_code == 200, served.text
        entries = await logged(client, 2)
        errors = [e for e in entries if e["error"]]
        assert len(errors) == 1 and "large tumours" in errors[0]["error"]
        assert errors[0]["predictions"] == [] and len(errors[0]["features"]["rows"]) == 1
        quality = (await client.get("/api/v1/monitoring/quality/bc", headers=ADMIN)).json()
        assert quality["variants"][0]["predictions"] == 1  # the failure is not scored


async def test_a_full_buffer_drops_and_counts_instead_of_growing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prediction_log, "MAX_BUFFERED", 2)
    async with running_app(settings) as app:
        log: PredictionLog = app.state.prediction_log
        log.buffer = [object(), object()]  # type: ignore[list-item]
        before = LOG_DROPPED._value.get()
        log.record(object())  # type: ignore[arg-type]
        assert len(log.buffer) == 2 and LOG_DROPPED._value.get() == before + 1
        log.buffer = []
