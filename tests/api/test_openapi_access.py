"""Walks every operation of the OpenAPI schema: anonymous → 401, a role lacking the permission
→ 403, admin → neither. New routes are covered without touching this file."""

from __future__ import annotations

import re
from typing import Any

import httpx
from fastapi import FastAPI

from mlops.security.permissions import Permission, Role, roles_lacking
from tests.conftest import ADMIN, create_key

PUBLIC_OPERATIONS = {("get", "/health"), ("get", "/ready"), ("post", "/api/v1/auth/token")}
PLACEHOLDER = "00000000-0000-4000-8000-000000000000"


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", PLACEHOLDER, path)


async def call(client: httpx.AsyncClient, method: str, path: str, **headers: str) -> int:
    body = {"json": {}} if method in {"post", "put", "patch"} else {}
    response = await client.request(method.upper(), concrete(path), headers=headers, **body)
    assert response.headers["content-type"].startswith(
        ("application/json", "application/problem+json")
    ), (method, path, response.headers["content-type"])
    return response.status_code


async def test_every_operation_is_guarded(app: FastAPI, client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    ops = operations(schema)
    assert len(ops) >= 8
    keys: dict[Role, str] = {}
    for method, path, operation in ops:
        if (method, path) in PUBLIC_OPERATIONS:
            assert "security" not in operation, (method, path)
            continue
        assert operation.get("security"), f"{method} {path} declares no security"
        assert "x-required-permission" in operation, f"{method} {path} names no permission"

        assert await call(client, method, path) == 401, (method, path)
        status = await call(client, method, path, **{"X-API-Key": "mlops_not-a-real-key"})
        assert status == 401, (method, path)

        permission = operation["x-required-permission"]
        if permission is not None:
            for role in roles_lacking(Permission(permission)):
                if role not in keys:
                    keys[role] = await create_key(client, role.value)
                status = await call(client, method, path, **{"X-API-Key": keys[role]})
                assert status == 403, (method, path, role)

        assert await call(client, method, path, **ADMIN) not in (401, 403), (method, path)


async def test_schema_documents_auth_and_problems(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key.",
    }
    assert schemes["OAuth2"]["type"] == "oauth2"
    assert schemes["OAuth2"]["flows"]["password"]["tokenUrl"] == "/api/v1/auth/token"
    assert "Problem" in schema["components"]["schemas"]
    for method, path, operation in operations(schema):
        assert operation.get("summary"), (method, path)
        for code in ("422", "500"):
            content = operation["responses"][code]["content"]
            assert "application/problem+json" in content, (method, path, code)
        if (method, path) not in PUBLIC_OPERATIONS:
            for code in ("401", "403"):
                assert "application/problem+json" in operation["responses"][code]["content"]
