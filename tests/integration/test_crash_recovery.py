"""`kill -9` of the service in the middle of runs: after a restart nothing is left running,
interrupted steps are retried under their policy or failed as interrupted, and runs go on."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, flush_redis, free_port, run_blocking
from tests.processes import service_env, start_service, stop_service


def sleeper(
    name: str, seconds: float, retries: int, depends_on: list[str] | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "type": "python",
        "depends_on": depends_on or [],
        "params": {"callable": "mlops.steps.library.testing:sleep", "kwargs": {"seconds": seconds}},
        "retries": {"max": retries, "backoff_seconds": 0.1},
    }


RETRIED = {"name": "retried", "steps": [sleeper("slow", 3, 1), sleeper("after", 0, 0, ["slow"])]}
FRAGILE = {"name": "fragile", "steps": [sleeper("slow", 3, 0), sleeper("after", 0, 0, ["slow"])]}


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {}
        return
    base = str(request.getfixturevalue("postgres_url"))
    name = f"{base.rsplit('/', 1)[1]}_crash"
    run_blocking(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    run_blocking(f'CREATE DATABASE "{name}"')
    redis_url = str(request.getfixturevalue("redis_url"))
    flush_redis(redis_url)
    yield {"MLOPS_DATABASE_URL": f"{base.rsplit('/', 1)[0]}/{name}", "MLOPS_REDIS_URL": redis_url}
    run_blocking(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def get_run(client: httpx.Client, run_id: str) -> dict[str, Any]:
    return dict(client.get(f"/api/v1/pipelines/runs/{run_id}").json())


def step(run: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["name"] == name)


def test_kill_9_mid_run_leaves_nothing_running(settings: dict[str, str], tmp_path: Path) -> None:
    env = service_env(tmp_path / "data", MLOPS_LOCAL_WORKERS="2", **settings)
    port = free_port()
    log = tmp_path / "service.log"
    service = start_service(env, port, log)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, headers=ADMIN, timeout=30) as client:
        for spec in (RETRIED, FRAGILE):
            assert client.post("/api/v1/pipelines", json=spec).status_code == 201
        retried = client.post("/api/v1/pipelines/retried/runs", json={}).json()["id"]
        fragile = client.post("/api/v1/pipelines/fragile/runs", json={}).json()["id"]
        deadline = time.monotonic() + 30
        while not all(
            step(get_run(client, r), "slow")["status"] == "running" for r in (retried, fragile)
        ):
            assert time.monotonic() < deadline, "the steps never started"
            time.sleep(0.1)
        time.sleep(0.5)  # both workers are inside their sleep now

        service.send_signal(signal.SIGKILL)
        service.wait(timeout=10)

        service = start_service(env, port, log)
        try:
            deadline = time.monotonic() + 60
            while True:
                runs = [get_run(client, r) for r in (retried, fragile)]
                if all(r["status"] in {"succeeded", "failed", "cancelled"} for r in runs):
                    break
                assert time.monotonic() < deadline, runs
                time.sleep(0.2)
            listed = client.get("/api/v1/pipelines/runs", params={"status": "running"}).json()
            assert listed["total"] == 0
        finally:
            stop_service(service)

    done, failed = runs
    assert done["status"] == "succeeded", done
    assert step(done, "slow")["attempts"] == 2
    assert step(done, "after")["status"] == "succeeded"
    assert failed["status"] == "failed", failed
    assert "interrupted" in step(failed, "slow")["error"]
    assert step(failed, "after")["status"] == "skipped"
    for run in runs:
        assert all(s["status"] not in {"running", "pending"} for s in run["steps"])
