"""100 training jobs submitted at once are all accepted, queued over the worker pool and
completed, with none lost; the API stays responsive meanwhile.

Against a real service process with two local workers, on SQLite and on Postgres + Redis. The
jobs are tiny (one trial on iris), so what is exercised is the per-job overhead: concurrent
submissions, the engine moving 100 runs (300 steps) over a pool of two workers, and 100
finalizers registering versions of one model in turn.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, flush_redis, free_port, run_blocking
from tests.processes import service_env, start_service, stop_service

pytestmark = pytest.mark.slow

JOBS = 100
JOB: dict[str, Any] = {
    "dataset": "sklearn://iris",
    "target": "target",
    "task": "classification",
    "estimator": "k_nearest_neighbours",
    "n_trials": 1,
    "holdout": 0.3,
    "parallelism": 1,
    "model_name": "iris-knn",  # one model: 100 versions registered by concurrent finalizers
}
FINAL = {"succeeded", "failed", "cancelled"}
ANSWER_WITHIN = 5.0  # seconds: a behaviour check (the API answers), not a benchmark
ALL_DONE_WITHIN = 600.0


@pytest.fixture(params=["sqlite", "postgres"])
def base_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A service on the embedded default, or on Postgres + Redis (a database of its own)."""
    stores: dict[str, str] = {}
    database = None
    if request.param == "postgres":
        base = str(request.getfixturevalue("postgres_url"))
        database = f"{base.rsplit('/', 1)[1]}_hundred"
        run_blocking(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        run_blocking(f'CREATE DATABASE "{database}"')
        redis_url = str(request.getfixturevalue("redis_url"))
        flush_redis(redis_url)
        stores = {
            "MLOPS_DATABASE_URL": f"{base.rsplit('/', 1)[0]}/{database}",
            "MLOPS_REDIS_URL": redis_url,
        }
    env = service_env(tmp_path / "data", MLOPS_LOCAL_WORKERS="2", **stores)
    port = free_port()
    service = start_service(env, port, tmp_path / "service.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_service(service)
        if database:
            run_blocking(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


async def timed_get(client: httpx.AsyncClient, path: str, **params: Any) -> float:
    started = time.monotonic()
    response = await client.get(path, params=params)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, (path, response.status_code, response.text)
    return elapsed


async def sample_while(client: httpx.AsyncClient, running: asyncio.Event) -> dict[str, list[float]]:
    """Ask for /health and the latest jobs over and over until ``running`` is cleared."""
    latencies: dict[str, list[float]] = {"health": [], "jobs": []}
    while running.is_set():
        latencies["health"].append(await timed_get(client, "/health"))
        latencies["jobs"].append(await timed_get(client, "/api/v1/training/jobs", limit=5))
        await asyncio.sleep(0.2)
    return latencies


async def test_a_hundred_jobs_at_once_all_complete(base_url: str) -> None:
    limits = httpx.Limits(max_connections=JOBS, max_keepalive_connections=JOBS)
    client = httpx.AsyncClient(base_url=base_url, headers=ADMIN, timeout=60, limits=limits)
    probe = httpx.AsyncClient(base_url=base_url, headers=ADMIN, timeout=30)
    running = asyncio.Event()
    running.set()
    async with client, probe:
        sampler = asyncio.create_task(sample_while(probe, running))
        try:
            started = time.monotonic()
            responses = await asyncio.gather(
                *(client.post("/api/v1/training/jobs", json=JOB) for _ in range(JOBS))
            )
            submitted = time.monotonic() - started
            assert [r.status_code for r in responses] == [202] * JOBS, [
                r.text for r in responses if r.status_code != 202
            ][:3]
            ids = {r.json()["id"] for r in responses}
            assert len(ids) == JOBS

            deadline = time.monotonic() + ALL_DONE_WITHIN
            while True:
                page = (await client.get("/api/v1/training/jobs", params={"limit": 200})).json()
                statuses = [job["status"] for job in page["items"]]
                if all(status in FINAL for status in statuses):
                    break
                assert time.monotonic() < deadline, {s: statuses.count(s) for s in statuses}
                await asyncio.sleep(1)
            total = time.monotonic() - started
        finally:
            running.clear()
            latencies = await sampler

        assert page["total"] == JOBS, page["total"]  # none lost, none duplicated
        assert {job["id"] for job in page["items"]} == ids
        assert statuses == ["succeeded"] * JOBS, {s: statuses.count(s) for s in statuses}
        one = (await client.get(f"/api/v1/training/jobs/{sorted(ids)[0]}")).json()
        assert one["progress"]["trials_complete"] == 1, one
        versions = (
            await client.get(f"/api/v1/training/models/{JOB['model_name']}/versions?limit=200")
        ).json()
        assert versions["total"] == JOBS, versions["total"]  # one version per job, numbered
        assert sorted(int(v["version"]) for v in versions["items"]) == list(range(1, JOBS + 1))
        assert {v["tags"]["mlops.job_id"] for v in versions["items"]} == ids

    for name, values in latencies.items():
        assert values, f"no {name} request was made while the jobs ran"
        assert max(values) < ANSWER_WITHIN, (name, max(values))
    report = ", ".join(
        f"{name} n={len(v)} median={statistics.median(v) * 1000:.0f}ms max={max(v) * 1000:.0f}ms"
        for name, v in latencies.items()
    )
    print(f"\n{JOBS} jobs: submitted in {submitted:.1f} s, all done in {total:.1f} s; {report}")
