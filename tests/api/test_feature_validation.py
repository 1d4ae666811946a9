"""Feature expectations on ingest and materialization, scheduled materialization, and the
feature store's Prometheus metrics."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from mlops.core.database import utcnow
from tests.api.test_features import BASE, DRIVER, STATS, ingest, row
from tests.conftest import ADMIN

GUARDED = {
    **STATS,
    "features": [
        {
            "name": "conv_rate",
            "type": "float64",
            "expectations": {"nullable": False, "min": 0, "max": 1},
        },
        {"name": "trips", "type": "int64", "expectations": {"min": 0}},
        {"name": "city", "type": "string", "expectations": {"allowed_values": ["a", "b"]}},
    ],
    "freshness_seconds": 3600,
}


async def define(client: httpx.AsyncClient, view: dict[str, Any]) -> None:
    assert (await client.put(f"{BASE}/entities/driver", json=DRIVER, headers=ADMIN)).is_success
    answered = await client.put(f"{BASE}/views/driver_stats", json=view, headers=ADMIN)
    assert answered.status_code == 201, answered.text


def metric(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


async def test_expectations_refuse_an_ingest_naming_the_row(client: httpx.AsyncClient) -> None:
    await define(client, GUARDED)
    refused = await ingest(
        client,
        [row(1, 2, 0.5, 3, "a"), row(2, 2, 1.5, 3, "a"), row(3, 2, None, -1, "z")],
    )
    assert refused.status_code == 422, refused.text
    problems = {e["field"]: e["message"] for e in refused.json()["errors"]}
    assert set(problems) == {"rows.2.conv_rate", "rows.1.conv_rate", "rows.2.trips", "rows.2.city"}
    assert "max" in problems["rows.1.conv_rate"] and "not_null" in problems["rows.2.conv_rate"]
    view = (await client.get(f"{BASE}/views/driver_stats", headers=ADMIN)).json()
    assert view["rows"] == 0

    bad = {**GUARDED, "features": [{"name": "city", "type": "string", "expectations": {"min": 1}}]}
    invalid = await client.put(f"{BASE}/views/other", json=bad, headers=ADMIN)
    assert invalid.status_code == 422 and "features.0" in invalid.text


async def test_a_warned_ingest_is_kept_with_its_report_and_counted(
    client: httpx.AsyncClient,
) -> None:
    await define(client, {**GUARDED, "on_violation": "warn"})
    before = (await client.get("/metrics")).text
    kept = await ingest(client, [row(1, 2, 0.5, 3, "a"), row(2, 2, 1.5, 3, "z")])
    assert kept.status_code == 201, kept.text
    report = kept.json()["validation"]
    assert report["rows"] == 2 and report["passed"] is False
    assert {(f["feature"], f["expectation"], f["first_row"]) for f in report["failures"]} == {
        ("conv_rate", "max", 1),
        ("city", "allowed_values", 1),
    }
    after = (await client.get("/metrics")).text
    labels = {
        "view": "driver_stats",
        "feature": "conv_rate",
        "expectation": "max",
        "stage": "ingest",
    }
    name = "mlops_feature_expectation_failures_total"
    assert (metric(after, name, **labels) or 0) - (metric(before, name, **labels) or 0) == 1


async def test_scheduled_materialization_reports_freshness_and_exports_metrics(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await define(client, {**GUARDED, "materialize_every_minutes": 5})
    await ingest(client, [row(1, 5, 0.5, 3, "a"), row(2, 6, 0.25, 1, "b")])
    schedule = app.state.feature_schedule
    runs_metric = (
        "mlops_feature_materializations_total",
        {"view": "driver_stats", "outcome": "succeeded"},
    )
    before = metric((await client.get("/metrics")).text, runs_metric[0], **runs_metric[1]) or 0
    assert await schedule.run_once() == ["driver_stats"]
    assert await schedule.run_once() == []  # nothing new, and not due yet
    runs = (await client.get(f"{BASE}/views/driver_stats/materializations", headers=ADMIN)).json()
    (run,) = runs["items"]
    assert run["created_by"] == "schedule" and run["entities_written"] == 2
    assert [f["expectation"] for f in run["validation"]["failures"]] == ["freshness"]

    online = await client.post(
        f"{BASE}/online",
        json={"feature_service": "eta", "entities": [{"driver_id": 1}]},
        headers=ADMIN,
    )
    assert online.status_code == 404  # no such service: the view alone serves nothing
    text = (await client.get("/metrics")).text
    assert metric(text, "mlops_feature_offline_rows", view="driver_stats", version="1") == 2
    freshness = metric(text, "mlops_feature_freshness_seconds", view="driver_stats")
    assert freshness is not None and 5 * 3600 - 5 < freshness < 5 * 3600 + 120
    assert metric(text, runs_metric[0], **runs_metric[1]) == before + 1

    await ingest(client, [row(3, 1, 0.5, 3, "a")])
    assert await schedule.run_once() == []  # new rows, but the last run is not 5 minutes old
    assert await schedule.run_once(utcnow() + timedelta(minutes=6)) == ["driver_stats"]
