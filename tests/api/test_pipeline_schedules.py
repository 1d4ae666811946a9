"""Cron schedules fire runs from the engine's process; a paused schedule does not fire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from mlops.pipelines.models import Pipeline
from tests.api.test_pipeline_runs import python_step, wait_for
from tests.conftest import ADMIN


async def make_due(app: FastAPI, name: str) -> None:
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(
            update(Pipeline)
            .where(Pipeline.name == name)
            .values(next_fire_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    app.state.pipeline_engine.notify()


async def runs_of(client: httpx.AsyncClient, name: str) -> list[dict[str, object]]:
    page = (await client.get(f"/api/v1/pipelines/runs?pipeline={name}", headers=ADMIN)).json()
    return list(page["items"])


async def test_due_schedule_fires_once_and_moves_on(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    spec = {
        "name": "nightly",
        "schedule": {"cron": "0 3 * * *", "timezone": "Europe/Paris"},
        "steps": [python_step("a", "noop")],
    }
    assert (await client.post("/api/v1/pipelines", json=spec, headers=ADMIN)).status_code == 201
    before = (await client.get("/api/v1/pipelines/nightly", headers=ADMIN)).json()
    fire_at = datetime.fromisoformat(before["next_fire_at"])
    assert fire_at.astimezone(UTC).hour in (1, 2)  # 03:00 in Paris is 01:00 or 02:00 UTC

    await make_due(app, "nightly")
    for _ in range(100):
        runs = await runs_of(client, "nightly")
        if runs:
            break
        await wait_for_tick()
    assert len(runs) == 1 and runs[0]["trigger"] == "schedule"
    finished = await wait_for(client, str(runs[0]["id"]))
    assert finished["status"] == "succeeded"
    after = (await client.get("/api/v1/pipelines/nightly", headers=ADMIN)).json()
    assert datetime.fromisoformat(after["next_fire_at"]) > datetime.now(UTC)

    await client.put("/api/v1/pipelines/nightly/schedule", json={"paused": True}, headers=ADMIN)
    await make_due(app, "nightly")
    for _ in range(15):
        await wait_for_tick()
    assert len(await runs_of(client, "nightly")) == 1


async def wait_for_tick() -> None:
    import asyncio

    await asyncio.sleep(0.1)
