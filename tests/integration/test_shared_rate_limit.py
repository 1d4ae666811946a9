"""Two real service processes sharing Redis admit at most N requests in a window of limit N."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BOOTSTRAP_KEY, flush_redis, free_port, run_blocking
from tests.processes import service_env, start_service, stop_service

LIMIT = 20


@pytest.fixture
def two_services(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[list[int]]:
    flush_redis(redis_url)
    database = postgres_url.rsplit("/", 1)[1]
    # Start a fresh chain: other tests leave rows behind, some tampered with on purpose.
    run_blocking(
        "DO $$ BEGIN IF to_regclass('audit_log') IS NOT NULL THEN "
        "DELETE FROM audit_log; END IF; END $$",
        database,
    )
    env = service_env(
        tmp_path / "data",
        MLOPS_DATABASE_URL=postgres_url,
        MLOPS_REDIS_URL=redis_url,
        MLOPS_RATE_LIMIT=f"{LIMIT}/minute",
    )
    ports = [free_port(), free_port()]
    processes = []
    try:
        for index, port in enumerate(ports):
            log = tmp_path / f"service-{index}.log"
            processes.append(start_service(env, port, log))
        yield ports
    finally:
        for process in processes:
            stop_service(process)


async def test_replicas_share_one_budget(two_services: list[int]) -> None:
    headers = {"X-API-Key": BOOTSTRAP_KEY}
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:

        async def call(index: int) -> int:
            port = two_services[index % 2]
            response = await client.get(f"http://127.0.0.1:{port}/api/v1/auth/me")
            return response.status_code

        statuses = await asyncio.gather(*(call(i) for i in range(3 * LIMIT)))
    assert statuses.count(200) == LIMIT
    assert statuses.count(429) == 2 * LIMIT


async def test_replicas_extend_one_audit_chain(two_services: list[int]) -> None:
    headers = {"X-API-Key": BOOTSTRAP_KEY}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:

        async def create(index: int) -> int:
            port = two_services[index % 2]
            response = await client.post(
                f"http://127.0.0.1:{port}/api/v1/auth/api-keys",
                json={"name": f"concurrent-{index}", "role": "viewer"},
            )
            return response.status_code

        statuses = await asyncio.gather(*(create(i) for i in range(12)))
        assert statuses == [201] * 12
        verdict = (
            await client.get(f"http://127.0.0.1:{two_services[0]}/api/v1/audit/verify")
        ).json()
    assert verdict["intact"] is True
    assert verdict["checked"] >= 12
