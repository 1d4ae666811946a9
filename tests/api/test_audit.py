from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import delete, update

from mlops.security.audit import verify_chain
from mlops.security.models import AuditEntry
from tests.conftest import ADMIN, create_key


async def entries(client: httpx.AsyncClient, query: str = "") -> list[dict[str, object]]:
    response = await client.get(f"/api/v1/audit{query}", headers=ADMIN)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def test_mutations_and_refusals_are_recorded(client: httpx.AsyncClient) -> None:
    await create_key(client, "viewer", name="audited")
    await client.post(
        "/api/v1/auth/api-keys",
        json={"name": "x", "role": "nope"},
        headers={**ADMIN, "X-Request-ID": "req-bad-role"},
    )
    await client.get("/api/v1/auth/me", headers={"X-API-Key": "mlops_wrong"})
    await client.post("/api/v1/auth/token", data={"username": "eve", "password": "guess-guess"})
    await client.get("/api/v1/auth/me", headers=ADMIN)  # a successful read is not audited

    logged = await entries(client)
    assert [(e["action"], e["outcome"], e["status_code"]) for e in reversed(logged)] == [
        ("POST /api/v1/auth/api-keys", "success", 201),
        ("POST /api/v1/auth/api-keys", "failure", 422),
        ("GET /api/v1/auth/me", "denied", 401),
        ("POST /api/v1/auth/token", "denied", 401),
    ]
    created, invalid, refused, login = reversed(logged)
    assert str(created["principal"]).startswith("bootstrap/")
    assert invalid["request_id"] == "req-bad-role"
    assert refused["principal"] == "anonymous"
    assert login["details"] == {"username": "eve"}
    assert "guess-guess" not in str(logged)
    assert all(e["occurred_at"].endswith("Z") or "+00:00" in str(e["occurred_at"]) for e in logged)


async def test_audit_listing_filters_and_paginates(client: httpx.AsyncClient) -> None:
    for index in range(3):
        await create_key(client, "viewer", name=f"k{index}")
    await client.get("/api/v1/auth/me", headers={"X-API-Key": "mlops_wrong"})

    denied = await entries(client, "?outcome=denied")
    assert len(denied) == 1 and denied[0]["principal"] == "anonymous"
    page = (await client.get("/api/v1/audit?limit=2&offset=1", headers=ADMIN)).json()
    assert page["total"] == 4 and len(page["items"]) == 2 and page["offset"] == 1
    by_action = await entries(client, "?action=api-keys")
    assert len(by_action) == 3
    assert await entries(client, "?since=2999-01-01T00:00:00Z") == []
    assert len(await entries(client, "?since=2000-01-01T00:00:00")) == 4
    bad = await client.get("/api/v1/audit?outcome=maybe", headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "outcome"


async def test_chain_detects_altered_and_deleted_rows(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    for index in range(4):
        await create_key(client, "viewer", name=f"chain{index}")
    verdict = (await client.get("/api/v1/audit/verify", headers=ADMIN)).json()
    assert verdict == {"intact": True, "checked": 4, "broken_seq": None, "reason": None}

    sessionmaker = app.state.database.sessionmaker
    async with sessionmaker() as session, session.begin():
        original = await session.get(AuditEntry, 3)
        assert original is not None
        original_principal = original.principal
        await session.execute(
            update(AuditEntry).where(AuditEntry.seq == 3).values(principal="someone-else")
        )
    async with sessionmaker() as session:
        altered = await verify_chain(session)
    assert (altered.intact, altered.broken_seq, altered.checked) == (False, 3, 2)

    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(AuditEntry).where(AuditEntry.seq == 3).values(principal=original_principal)
        )
        await session.execute(delete(AuditEntry).where(AuditEntry.seq == 2))
    async with sessionmaker() as session:
        deleted = await verify_chain(session)
    assert (deleted.intact, deleted.broken_seq) == (False, 2)
    assert deleted.reason == "entry 2 is missing"
