from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
from fastapi import FastAPI
from sqlalchemy import select, update

from mlops.app import create_app
from mlops.security.models import ApiKey, User
from tests.conftest import ADMIN, JWT_SECRET, client_for, create_key, running_app


async def create_user(client: httpx.AsyncClient, username: str, role: str, password: str) -> None:
    response = await client.post(
        "/api/v1/auth/users",
        json={"username": username, "password": password, "role": role},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/token", data={"username": username, "password": password}
    )


async def test_api_key_is_shown_once_and_stored_hashed(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    created = await client.post(
        "/api/v1/auth/api-keys", json={"name": "ci", "role": "viewer"}, headers=ADMIN
    )
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("mlops_") and len(key) > 40
    assert created.json()["prefix"] == key[:12]

    listed = (await client.get("/api/v1/auth/api-keys", headers=ADMIN)).json()
    assert listed["total"] == 2  # the bootstrap key and this one
    assert all("key" not in item for item in listed["items"])
    assert key not in json.dumps(listed)

    async with app.state.database.sessionmaker() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.name == "ci"))
    assert row is not None
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in (row.key_hash, row.prefix)

    me = await client.get("/api/v1/auth/me", headers={"X-API-Key": key})
    assert me.status_code == 200
    assert me.json()["role"] == "viewer"
    assert "pipelines:read" in me.json()["permissions"]
    assert "pipelines:write" not in me.json()["permissions"]


async def test_revoked_key_is_refused(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/v1/auth/api-keys", json={"name": "temp", "role": "ml_engineer"}, headers=ADMIN
    )
    key, key_id = created.json()["key"], created.json()["id"]
    assert (await client.get("/api/v1/auth/me", headers={"X-API-Key": key})).status_code == 200

    revoked = await client.delete(f"/api/v1/auth/api-keys/{key_id}", headers=ADMIN)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None

    refused = await client.get("/api/v1/auth/me", headers={"X-API-Key": key})
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert "WWW-Authenticate" in refused.headers

    active = (await client.get("/api/v1/auth/api-keys", headers=ADMIN)).json()
    assert key_id not in {item["id"] for item in active["items"]}
    everything = (
        await client.get("/api/v1/auth/api-keys?include_revoked=true", headers=ADMIN)
    ).json()
    assert key_id in {item["id"] for item in everything["items"]}

    missing = await client.delete(
        "/api/v1/auth/api-keys/00000000-0000-4000-8000-000000000000", headers=ADMIN
    )
    assert missing.status_code == 404


async def test_expired_key_is_refused(app: FastAPI, client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/v1/auth/api-keys",
        json={"name": "short", "role": "viewer", "expires_in_days": 1},
        headers=ADMIN,
    )
    body = created.json()
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert timedelta(hours=23) < expires_at - datetime.now(UTC) <= timedelta(days=1)
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(
            update(ApiKey)
            .where(ApiKey.name == "short")
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    response = await client.get("/api/v1/auth/me", headers={"X-API-Key": body["key"]})
    assert response.status_code == 401
    assert response.json()["detail"] == "API key expired"


async def test_password_login_issues_a_working_jwt(app: FastAPI, client: httpx.AsyncClient) -> None:
    await create_user(client, "alice", "data_scientist", "correct horse battery")
    async with app.state.database.sessionmaker() as session:
        user = await session.scalar(select(User).where(User.username == "alice"))
    assert user is not None and user.password_hash.startswith("$argon2id$")

    response = await login(client, "alice", "correct horse battery")
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["roles"] == ["data_scientist"]
    assert claims["exp"] > claims["iat"]

    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json() == {
        "name": "alice",
        "kind": "user",
        "role": "data_scientist",
        "permissions": me.json()["permissions"],
    }
    forbidden = await client.get("/api/v1/audit", headers={"Authorization": f"Bearer {token}"})
    assert forbidden.status_code == 403
    assert "audit:read" in forbidden.json()["detail"]


async def test_wrong_password_and_unknown_user_are_refused_alike(
    client: httpx.AsyncClient,
) -> None:
    await create_user(client, "bob", "viewer", "the right password")
    wrong = await login(client, "bob", "not the password")
    unknown = await login(client, "nobody", "whatever password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    duplicate = await client.post(
        "/api/v1/auth/users",
        json={"username": "bob", "password": "another long one", "role": "viewer"},
        headers=ADMIN,
    )
    assert duplicate.status_code == 409


def forge(claims: dict[str, object], secret: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def unsigned(claims: dict[str, object]) -> str:
    import base64

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def test_bad_tokens_are_refused(client: httpx.AsyncClient) -> None:
    now = int(datetime.now(UTC).timestamp())
    good = {"sub": "mallory", "roles": ["admin"], "iat": now, "exp": now + 600, "iss": "mlops"}
    bad_tokens = {
        "expired": forge({**good, "iat": now - 1200, "exp": now - 600}),
        "alg none": unsigned(good),
        "wrong secret": forge(good, secret="another-secret-0123456789abcdefghijklmnop"),
        "malformed": "not.a.jwt",
        "garbage": "abc",
        "no exp": forge({k: v for k, v in good.items() if k != "exp"}),
        "unknown role": forge({**good, "roles": ["root"]}),
        "wrong issuer": forge({**good, "iss": "elsewhere"}),
    }
    for label, token in bad_tokens.items():
        response = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, label
        assert response.headers["content-type"] == "application/problem+json", label
    accepted = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {forge(good)}"}
    )
    assert accepted.status_code == 200


async def test_role_permissions_gate_key_management(client: httpx.AsyncClient) -> None:
    engineer = await create_key(client, "ml_engineer")
    response = await client.post(
        "/api/v1/auth/api-keys",
        json={"name": "escalate", "role": "admin"},
        headers={"X-API-Key": engineer},
    )
    assert response.status_code == 403
    assert response.json()["type"] == "urn:mlops:problem:permission-denied"


async def test_unsetting_the_bootstrap_key_revokes_it(settings_factory: Any) -> None:
    async with running_app(settings_factory()) as app, client_for(app) as client:
        assert (await client.get("/api/v1/auth/me", headers=ADMIN)).status_code == 200
    without_key = create_app(settings_factory(bootstrap_admin_key=None))  # no reset: same rows
    async with without_key.router.lifespan_context(without_key), client_for(without_key) as client:
        assert (await client.get("/api/v1/auth/me", headers=ADMIN)).status_code == 401
    async with running_app(settings_factory()) as app, client_for(app) as client:
        assert (await client.get("/api/v1/auth/me", headers=ADMIN)).status_code == 200
