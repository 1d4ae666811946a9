from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from mlops.core.settings import Settings
from mlops.deployments.targets import InProcessTarget
from tests.conftest import client_for, running_app


async def test_health_is_public(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_ready_reports_each_component(
    app: FastAPI, client: httpx.AsyncClient, store: str
) -> None:
    await asyncio.wait_for(app.state.deployments.warm.wait(), 60)  # see the test below
    response = await client.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["components"]["database"]["status"] == "ok"
    if store == "postgres":
        assert body["components"]["database"]["detail"] == "postgresql"
        assert body["components"]["redis"]["status"] == "ok"
    else:
        assert body["components"]["database"]["detail"] == "sqlite"
        assert "redis" not in body["components"]


async def test_ready_holds_until_the_serving_target_is_prepared(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    prepare = InProcessTarget.prepare

    async def held(target: InProcessTarget) -> None:
        await gate.wait()
        await prepare(target)

    monkeypatch.setattr(InProcessTarget, "prepare", held)
    async with running_app(settings) as app, client_for(app) as client:
        waiting = await client.get("/ready")
        assert waiting.status_code == 503, waiting.text
        deployments = waiting.json()["components"]["deployments"]
        assert deployments["status"] == "down"
        assert deployments["detail"].startswith("importing the serving stack"), deployments
        gate.set()
        await asyncio.wait_for(app.state.deployments.warm.wait(), 60)
        assert (await client.get("/ready")).status_code == 200
