"""Every error is application/problem+json (RFC 9457)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from mlops.core.settings import Settings
from mlops.observability.logging import JsonFormatter
from tests.conftest import ADMIN, client_for, running_app

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["type"]
    assert body["request_id"] == response.headers["x-request-id"]
    return dict(body)


async def test_not_found_and_method_not_allowed(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/nothing-here", headers=ADMIN), 404)
    body = assert_problem(await client.put("/api/v1/auth/api-keys", headers=ADMIN), 405)
    assert "PUT" in str(body["detail"])


async def test_validation_error_names_each_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/api-keys",
        json={"name": "ok", "role": "emperor", "expires_in_days": 0},
        headers=ADMIN,
    )
    body = assert_problem(response, 422)
    fields = {error["field"] for error in body["errors"]}  # type: ignore[union-attr]
    assert fields == {"role", "expires_in_days"}
    assert body["type"] == "urn:mlops:problem:validation-error"
    query = await client.get("/api/v1/auth/api-keys?limit=0", headers=ADMIN)
    assert {e["loc"][0] for e in assert_problem(query, 422)["errors"]} == {"query"}  # type: ignore[union-attr]


async def test_malformed_json_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/api-keys",
        content=b"{not json",
        headers={**ADMIN, "content-type": "application/json"},
    )
    assert_problem(response, 422)


async def test_oversized_body_is_a_413(settings_factory: object) -> None:
    settings: Settings = settings_factory(max_request_bytes=2048)  # type: ignore[operator]
    async with running_app(settings) as app, client_for(app) as client:
        declared = await client.post(
            "/api/v1/auth/api-keys",
            content=b"x" * 4096,
            headers={**ADMIN, "content-type": "application/json"},
        )
        assert_problem(declared, 413)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"y" * 1024

        streamed = await client.post(
            "/api/v1/auth/api-keys",
            content=chunks(),
            headers={**ADMIN, "content-type": "application/json"},
        )
        assert_problem(streamed, 413)


@pytest.fixture
def failing_app(app: FastAPI) -> FastAPI:
    async def explode() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    app.add_api_route("/test-only/explode", explode, include_in_schema=False)
    return app


async def test_unhandled_error_is_a_500_without_internals(
    failing_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_for(failing_app) as client:
        response = await client.get("/test-only/explode", headers={"X-Request-ID": "trace-me-42"})
    body = assert_problem(response, 500)
    assert body["request_id"] == "trace-me-42"
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert "Traceback" not in response.text
    logged = [r for r in caplog.records if r.exc_info and r.name == "mlops.access"]
    assert logged, "the crash must be logged with its traceback"
    line = JsonFormatter().format(logged[0])
    assert "RuntimeError" in line and "trace-me-42" in line and "hunter2" not in line
