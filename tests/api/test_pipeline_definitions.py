"""Pipeline definitions: versions, and a 422 naming the step and field for each invalid case."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN

EXAMPLE: dict[str, Any] = {
    "name": "breast-cancer-training",
    "description": "Train and gate a classifier",
    "backend": "local",
    "params": {"min_rows": 100},
    "schedule": {"cron": "0 3 * * *", "timezone": "UTC"},
    "steps": [
        {
            "name": "validate",
            "type": "data_validation",
            "params": {"dataset": "sklearn://breast_cancer", "min_rows": "{{ params.min_rows }}"},
        },
        {
            "name": "features",
            "type": "feature_engineering",
            "depends_on": ["validate"],
            "params": {"dataset": "{{ steps.validate.outputs.dataset }}"},
            "retries": {"max": 2, "backoff_seconds": 1, "max_backoff_seconds": 30},
            "timeout_seconds": 600,
            "cache": True,
        },
    ],
}


def example(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(EXAMPLE)
    spec.update(changes)
    return spec


async def apply(client: httpx.AsyncClient, spec: dict[str, Any]) -> httpx.Response:
    return await client.post("/api/v1/pipelines", json=spec, headers=ADMIN)


async def test_apply_creates_versions_only_on_change(client: httpx.AsyncClient) -> None:
    first = await apply(client, EXAMPLE)
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1 and first.json()["created"] is True
    assert first.json()["schedule"] == {"cron": "0 3 * * *", "timezone": "UTC"}
    assert first.json()["next_fire_at"].startswith(first.json()["created_at"][:4])

    same = await apply(client, EXAMPLE)
    assert same.status_code == 200 and same.json()["created"] is False
    assert same.json()["version"] == 1

    changed = await apply(client, example(params={"min_rows": 50}))
    assert changed.status_code == 201 and changed.json()["version"] == 2

    versions = (
        await client.get(f"/api/v1/pipelines/{EXAMPLE['name']}/versions", headers=ADMIN)
    ).json()
    assert [v["version"] for v in versions["items"]] == [2, 1]
    old = await client.get(f"/api/v1/pipelines/{EXAMPLE['name']}/versions/1", headers=ADMIN)
    assert old.json()["spec"]["params"] == {"min_rows": 100}
    listed = (await client.get("/api/v1/pipelines", headers=ADMIN)).json()
    assert listed["total"] == 1 and listed["items"][0]["latest_version"] == 2


async def test_schedule_can_be_paused(client: httpx.AsyncClient) -> None:
    await apply(client, EXAMPLE)
    paused = await client.put(
        f"/api/v1/pipelines/{EXAMPLE['name']}/schedule", json={"paused": True}, headers=ADMIN
    )
    assert paused.status_code == 200 and paused.json()["schedule_paused"] is True
    await apply(client, example(name="unscheduled", schedule=None))
    refused = await client.put(
        "/api/v1/pipelines/unscheduled/schedule", json={"paused": True}, headers=ADMIN
    )
    assert refused.status_code == 409


def with_step(index: int, **changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(EXAMPLE)
    spec["steps"][index].update(changes)
    return spec


INVALID = {
    "unknown step type": (with_step(1, type="teleport"), "steps.1.type"),
    "unknown dependency": (with_step(1, depends_on=["nowhere"]), "steps.1.depends_on"),
    "cycle": (with_step(0, depends_on=["features"]), "steps.0.depends_on"),
    "duplicate step names": (with_step(1, name="validate", depends_on=[]), "steps.1.name"),
    "unknown parameter": (
        with_step(0, params={"dataset": "sklearn://iris", "colour": "red"}),
        "steps.0.params.colour",
    ),
    "wrong parameter type": (
        with_step(0, params={"dataset": "sklearn://iris", "min_rows": "many"}),
        "steps.0.params.min_rows",
    ),
    "parameter out of its range": (
        with_step(0, params={"dataset": "sklearn://iris", "max_null_fraction": 2}),
        "steps.0.params.max_null_fraction",
    ),
    "missing required parameter": (with_step(0, params={}), "steps.0.params.dataset"),
    "bad cron": (example(schedule={"cron": "every day", "timezone": "UTC"}), "schedule.cron"),
    "bad time zone": (
        example(schedule={"cron": "0 3 * * *", "timezone": "Mars/Olympus"}),
        "schedule.timezone",
    ),
    "undefined pipeline parameter": (
        with_step(0, params={"dataset": "sklearn://iris", "min_rows": "{{ params.nope }}"}),
        "steps.0.params.min_rows",
    ),
    "output of a step that is not upstream": (
        with_step(0, params={"dataset": "{{ steps.features.outputs.dataset }}"}),
        "steps.0.params.dataset",
    ),
    "output the step does not have": (
        with_step(1, params={"dataset": "{{ steps.validate.outputs.nothing }}"}),
        "steps.1.params.dataset",
    ),
    "default of the wrong type": (example(params={"min_rows": "lots"}), "steps.0.params.min_rows"),
    "bad name": (example(name="Not Valid!"), "name"),
    "unknown backend": (example(backend="mainframe"), "backend"),
}


@pytest.mark.parametrize("case", list(INVALID))
async def test_invalid_definitions_name_the_field(client: httpx.AsyncClient, case: str) -> None:
    spec, field = INVALID[case]
    response = await apply(client, spec)
    assert response.status_code == 422, (case, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    fields = [error["field"] for error in response.json()["errors"]]
    assert field in fields, (case, fields)
