from __future__ import annotations

import logging
import re

import httpx
import pytest

from mlops.observability.logging import JsonFormatter
from tests.conftest import ADMIN, BOOTSTRAP_KEY, create_key


async def test_request_id_is_accepted_or_generated(client: httpx.AsyncClient) -> None:
    given = await client.get("/health", headers={"X-Request-ID": "ci-run-7.step-2"})
    assert given.headers["x-request-id"] == "ci-run-7.step-2"
    generated = await client.get("/health")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    hostile = await client.get("/health", headers={"X-Request-ID": "bad id\twith spaces" * 10})
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["x-request-id"])


def metric_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


async def test_metrics_label_route_templates_not_paths(client: httpx.AsyncClient) -> None:
    key_id = "5b3c1f4e-2d6a-4b8c-9e0f-1a2b3c4d5e6f"
    await client.delete(f"/api/v1/auth/api-keys/{key_id}", headers=ADMIN)
    await client.get("/no/such/path/12345", headers=ADMIN)
    await client.get("/openapi.json")
    text = (await client.get("/metrics")).text
    requests = metric_lines(text, "mlops_http_requests_total")
    durations = metric_lines(text, "mlops_http_request_duration_seconds_bucket")
    assert requests and durations
    assert any(
        'route="/api/v1/auth/api-keys/{key_id}"' in line
        and 'method="DELETE"' in line
        and 'status="404"' in line
        for line in requests
    )
    assert any('route="<unmatched>"' in line and 'status="404"' in line for line in requests)
    assert any('route="/openapi.json"' in line for line in requests)
    for line in requests + durations:
        assert key_id not in line and "12345" not in line
        assert set(re.findall(r'(\w+)="', line)) <= {"method", "route", "status", "le"}
    assert "mlops_http_requests_in_flight" in text
    assert "process_cpu_seconds_total" in text or "python_gc_objects_collected_total" in text


async def test_logs_never_carry_secrets(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = await create_key(client, "viewer")
    password = "super secret passphrase 42"
    await client.post(
        "/api/v1/auth/users",
        json={"username": "carol", "password": password, "role": "viewer"},
        headers=ADMIN,
    )
    token = (
        await client.post("/api/v1/auth/token", data={"username": "carol", "password": password})
    ).json()["access_token"]
    await client.get("/api/v1/auth/me", headers={"X-API-Key": key})
    await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    await client.post(
        "/api/v1/auth/token", data={"username": "carol", "password": "wrong " + password}
    )
    logging.getLogger("mlops.test").warning(
        "a careless caller logged api_key=%s and Authorization: Bearer %s", key, token
    )
    formatter = JsonFormatter()
    output = "\n".join(formatter.format(record) for record in caplog.records)
    assert "mlops.access" in output
    for secret in (key, BOOTSTRAP_KEY, password, token):
        assert secret not in output
