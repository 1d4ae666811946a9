"""Two real service processes sharing Redis admit at most N requests in a window of limit N."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BOOTSTRAP_KEY, JWT_SECRET, flush_redis, free_port, run_blocking

LIMIT = 20


def start_service(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mlops", "serve", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait_healthy(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"service on {port} exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    pytest.fail(f"service on {port} did not become healthy: {log.read_text()[-3000:]}")


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        MLOPS_DATABASE_URL=postgres_url,
        MLOPS_REDIS_URL=redis_url,
        MLOPS_JWT_SECRET=JWT_SECRET,
        MLOPS_BOOTSTRAP_ADMIN_KEY=BOOTSTRAP_KEY,
        MLOPS_RATE_LIMIT=f"{LIMIT}/minute",
        MLOPS_DATA_DIR=str(tmp_path / "data"),
    )
    ports = [free_port(), free_port()]
    processes = []
    try:
        for index, port in enumerate(ports):
            log = tmp_path / f"service-{index}.log"
            process = start_service(env, port, log)
            processes.append(process)
            wait_healthy(port, process, log)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


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
