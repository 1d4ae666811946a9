from __future__ import annotations

import httpx


async def test_health_is_public(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_ready_reports_each_component(client: httpx.AsyncClient, store: str) -> None:
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
