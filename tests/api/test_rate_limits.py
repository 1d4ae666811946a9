from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ADMIN, client_for, create_key, running_app

CLOSED_REDIS = "redis://127.0.0.1:1/0"


async def test_principal_limit_answers_429_with_headers(settings_factory: Any) -> None:
    async with (
        running_app(settings_factory(rate_limit="5/minute")) as app,
        client_for(app) as client,
    ):
        statuses = []
        for _ in range(5):
            response = await client.get("/api/v1/auth/me", headers=ADMIN)
            statuses.append(response.status_code)
            assert response.headers["ratelimit-limit"] == "5"
        assert statuses == [200] * 5
        assert response.headers["ratelimit-remaining"] == "0"
        assert 0 < int(response.headers["ratelimit-reset"]) <= 60

        refused = await client.get("/api/v1/auth/me", headers=ADMIN)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["ratelimit-remaining"] == "0"
        assert refused.json()["type"] == "urn:mlops:problem:rate-limited"


async def test_budgets_are_per_principal(settings_factory: Any) -> None:
    settings = settings_factory(rate_limit="3/minute", rate_limit_anonymous="2/minute")
    async with running_app(settings) as app, client_for(app) as client:
        other = await create_key(client, "viewer")  # spends one of the admin's three
        for _ in range(2):
            assert (await client.get("/api/v1/auth/me", headers=ADMIN)).status_code == 200
        assert (await client.get("/api/v1/auth/me", headers=ADMIN)).status_code == 429
        assert (
            await client.get("/api/v1/auth/me", headers={"X-API-Key": other})
        ).status_code == 200


async def test_failed_authentication_spends_the_anonymous_budget(settings_factory: Any) -> None:
    settings = settings_factory(rate_limit_anonymous="3/minute")
    async with running_app(settings) as app, client_for(app) as client:
        guesses = [
            (
                await client.get("/api/v1/auth/me", headers={"X-API-Key": f"mlops_guess{i}"})
            ).status_code
            for i in range(5)
        ]
        assert guesses == [401, 401, 401, 429, 429]
        logins = await client.post("/api/v1/auth/token", data={"username": "a", "password": "b"})
        assert logins.status_code == 429
        assert (await client.get("/api/v1/auth/me", headers=ADMIN)).status_code == 200


async def test_redis_down_fails_open_by_default(settings_factory: Any) -> None:
    settings = settings_factory(redis_url=CLOSED_REDIS, rate_limit="1/minute")
    async with running_app(settings) as app, client_for(app) as client:
        for _ in range(3):
            response = await client.get("/api/v1/auth/me", headers=ADMIN)
            assert response.status_code == 200
            assert "ratelimit-limit" not in response.headers
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded"
        assert ready.json()["components"]["redis"]["status"] == "degraded"


async def test_redis_down_fails_closed_when_configured(settings_factory: Any) -> None:
    settings = settings_factory(redis_url=CLOSED_REDIS, rate_limit_fail_open=False)
    async with running_app(settings) as app, client_for(app) as client:
        response = await client.get("/api/v1/auth/me", headers=ADMIN)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["components"]["redis"]["status"] == "down"
        assert (await client.get("/health")).status_code == 200


async def test_database_down_makes_ready_503(app: Any, client: httpx.AsyncClient) -> None:
    await app.state.database.dispose()
    original = app.state.database.engine
    from sqlalchemy.ext.asyncio import create_async_engine

    url = (
        "postgresql+asyncpg://nobody@127.0.0.1:1/none"
        if original.dialect.name == "postgresql"
        else "sqlite+aiosqlite:////nonexistent-dir/none.db"
    )
    app.state.database.engine = create_async_engine(url)
    try:
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["components"]["database"]["status"] == "down"
    finally:
        await app.state.database.engine.dispose()
        app.state.database.engine = original
