"""Runs on the local backend: real worker processes, retries, timeouts, crashes, cancel, cache."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from tests.api.test_pipeline_definitions import EXAMPLE
from tests.conftest import ADMIN

FINAL = {"succeeded", "failed", "cancelled"}


async def apply(client: httpx.AsyncClient, spec: dict[str, Any]) -> None:
    response = await client.post("/api/v1/pipelines", json=spec, headers=ADMIN)
    assert response.status_code in (200, 201), response.text


async def start(
    client: httpx.AsyncClient, name: str, params: dict[str, Any] | None = None, **headers: str
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/pipelines/{name}/runs",
        json={"params": params or {}},
        headers={**ADMIN, **headers},
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


async def wait_for(
    client: httpx.AsyncClient, run_id: str, statuses: set[str] = FINAL, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = (await client.get(f"/api/v1/pipelines/runs/{run_id}", headers=ADMIN)).json()
        if run["status"] in statuses:
            return dict(run)
        assert time.monotonic() < deadline, run
        await asyncio.sleep(0.05)


def python_step(
    name: str, function: str, depends_on: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    kwargs = extra.pop("kwargs", {})
    return {
        "name": name,
        "type": "python",
        "depends_on": depends_on or [],
        "params": {"callable": f"mlops.steps.library.testing:{function}", "kwargs": kwargs},
        **extra,
    }


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in run["steps"]}


async def test_example_runs_and_the_second_run_hits_the_cache(client: httpx.AsyncClient) -> None:
    await apply(client, EXAMPLE)
    first = await wait_for(client, (await start(client, EXAMPLE["name"]))["id"])
    assert first["status"] == "succeeded", first
    steps = steps_of(first)
    assert steps["validate"]["outputs"]["rows"] == 569
    assert steps["features"]["status"] == "succeeded"
    assert steps["features"]["outputs"]["n_features"] == 30
    assert steps["features"]["attempts"] == 1

    second = await wait_for(client, (await start(client, EXAMPLE["name"]))["id"])
    assert second["status"] == "succeeded"
    cached = steps_of(second)["features"]
    assert cached["status"] == "cached"
    assert cached["outputs"] == steps["features"]["outputs"]
    assert cached["attempts"] == 0

    listed = (
        await client.get(
            f"/api/v1/pipelines/runs?pipeline={EXAMPLE['name']}&status=succeeded", headers=ADMIN
        )
    ).json()
    assert listed["total"] == 2

    metrics = (await client.get("/metrics")).text
    assert (
        'mlops_pipeline_runs_total{pipeline="breast-cancer-training",status="succeeded"}' in metrics
    )
    assert (
        'mlops_pipeline_step_duration_seconds_count{status="succeeded",step_type="feature_engineering"}'
        in metrics
    )
    assert "mlops_pipeline_active_runs" in metrics and "mlops_pipeline_step_queue_depth" in metrics


async def test_run_parameters_are_checked(client: httpx.AsyncClient) -> None:
    await apply(client, EXAMPLE)
    unknown = await client.post(
        f"/api/v1/pipelines/{EXAMPLE['name']}/runs", json={"params": {"nope": 1}}, headers=ADMIN
    )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "params.nope"
    wrong = await client.post(
        f"/api/v1/pipelines/{EXAMPLE['name']}/runs",
        json={"params": {"min_rows": "x"}},
        headers=ADMIN,
    )
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "params.min_rows"
    failing = await wait_for(
        client, (await start(client, EXAMPLE["name"], {"min_rows": 10_000}))["id"]
    )
    assert failing["status"] == "failed"
    assert "min_rows" in steps_of(failing)["validate"]["error"]
    assert steps_of(failing)["features"]["status"] == "skipped"


async def test_idempotency_key_returns_the_same_run(client: httpx.AsyncClient) -> None:
    await apply(client, {"name": "quick", "steps": [python_step("a", "noop")]})
    first = await start(client, "quick", **{"Idempotency-Key": "ci-42"})
    again = await start(client, "quick", **{"Idempotency-Key": "ci-42"})
    assert again["id"] == first["id"]
    other = await client.post(
        "/api/v1/pipelines/quick/runs",
        json={"params": {}, "version": 1},
        headers={**ADMIN, "Idempotency-Key": "ci-42"},
    )
    assert other.status_code == 409
    runs = (await client.get("/api/v1/pipelines/runs?pipeline=quick", headers=ADMIN)).json()
    assert runs["total"] == 1


async def test_retries_with_backoff_then_failure(client: httpx.AsyncClient) -> None:
    spec = {
        "name": "flaky",
        "steps": [
            python_step(
                "boom",
                "fail",
                kwargs={"message": "no luck"},
                retries={"max": 2, "backoff_seconds": 0.05},
            ),
            python_step("after", "noop", ["boom"]),
        ],
    }
    await apply(client, spec)
    run = await wait_for(client, (await start(client, "flaky"))["id"])
    assert run["status"] == "failed"
    boom, after = steps_of(run)["boom"], steps_of(run)["after"]
    assert boom["status"] == "failed" and boom["attempts"] == 3
    assert "no luck" in boom["error"]
    assert after["status"] == "skipped" and "boom" in after["error"]


async def test_timeout_and_crash_fail_the_step_not_the_service(client: httpx.AsyncClient) -> None:
    spec = {
        "name": "rough",
        "steps": [
            python_step("slow", "sleep", kwargs={"seconds": 30}, timeout_seconds=0.5),
            python_step("crash", "crash"),
        ],
    }
    await apply(client, spec)
    run = await wait_for(client, (await start(client, "rough"))["id"])
    assert run["status"] == "failed"
    assert "timed out" in steps_of(run)["slow"]["error"]
    assert "died" in steps_of(run)["crash"]["error"]
    await apply(client, {"name": "after-crash", "steps": [python_step("a", "noop")]})
    healthy = await wait_for(client, (await start(client, "after-crash"))["id"])
    assert healthy["status"] == "succeeded"


async def test_cancel_stops_running_steps_and_skips_the_rest(client: httpx.AsyncClient) -> None:
    spec = {
        "name": "long",
        "steps": [
            python_step("wait", "sleep", kwargs={"seconds": 30}),
            python_step("next", "noop", ["wait"]),
        ],
    }
    await apply(client, spec)
    run = await start(client, "long")
    await wait_for(client, run["id"], {"running"})
    while steps_of(await wait_for(client, run["id"], {"running"}))["wait"]["status"] != "running":
        await asyncio.sleep(0.05)
    cancelled = await client.post(f"/api/v1/pipelines/runs/{run['id']}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    final = await wait_for(client, run["id"])
    assert steps_of(final)["wait"]["status"] == "cancelled"
    assert steps_of(final)["next"]["status"] == "skipped"
    again = await client.post(f"/api/v1/pipelines/runs/{run['id']}/cancel", headers=ADMIN)
    assert again.status_code == 409
    await apply(client, {"name": "after-cancel", "steps": [python_step("a", "noop")]})
    assert (await wait_for(client, (await start(client, "after-cancel"))["id"]))[
        "status"
    ] == "succeeded"


async def test_parallel_branches_and_logs(client: httpx.AsyncClient, tmp_path: Path) -> None:
    spec = {
        "name": "fan",
        "steps": [
            python_step("left", "sleep", kwargs={"seconds": 1}),
            python_step("right", "sleep", kwargs={"seconds": 1}),
            python_step("join", "echo", ["left", "right"], kwargs={"said": "hello from join"}),
        ],
    }
    await apply(client, spec)
    run = await wait_for(client, (await start(client, "fan"))["id"])
    assert run["status"] == "succeeded"
    left, right = steps_of(run)["left"], steps_of(run)["right"]
    assert left["started_at"] < right["finished_at"] and right["started_at"] < left["finished_at"]
    assert steps_of(run)["join"]["outputs"] == {"said": "hello from join"}
    logs = await client.get(f"/api/v1/pipelines/runs/{run['id']}/steps/join/logs", headers=ADMIN)
    assert logs.status_code == 200
    assert "join" in logs.text
    followed = await client.get(
        f"/api/v1/pipelines/runs/{run['id']}/steps/join/logs?follow=true", headers=ADMIN
    )
    assert followed.status_code == 200 and followed.text == logs.text
    missing = await client.get(f"/api/v1/pipelines/runs/{run['id']}/steps/nope/logs", headers=ADMIN)
    assert missing.status_code == 404


async def test_steps_wait_pending_for_a_free_worker(client: httpx.AsyncClient) -> None:
    branches = [python_step(f"b{i}", "sleep", kwargs={"seconds": 0.6}) for i in range(5)]
    await apply(client, {"name": "wide", "steps": branches})
    run_id = (await start(client, "wide"))["id"]
    most_running = 0
    while True:
        run = (await client.get(f"/api/v1/pipelines/runs/{run_id}", headers=ADMIN)).json()
        statuses = [step["status"] for step in run["steps"]]
        most_running = max(most_running, statuses.count("running"))
        if run["status"] in FINAL:
            break
        await asyncio.sleep(0.05)
    assert run["status"] == "succeeded"
    assert most_running == 2  # MLOPS_LOCAL_WORKERS: the rest waited as pending, not running
    assert all(step["attempts"] == 1 for step in run["steps"])


async def test_queued_runs_start_first_come_first_served(client: httpx.AsyncClient) -> None:
    await apply(
        client, {"name": "nap", "steps": [python_step("nap", "sleep", kwargs={"seconds": 0.3})]}
    )
    run_ids = []
    for _ in range(8):  # submitted while earlier ones wait and slots free up
        run_ids.append((await start(client, "nap"))["id"])
        await asyncio.sleep(0.1)
    runs = [await wait_for(client, run_id) for run_id in run_ids]
    assert all(run["status"] == "succeeded" for run in runs)
    started = [run["steps"][0]["started_at"] for run in runs]  # when the step got a worker
    assert started == sorted(started), started  # 2 workers, 8 runs: in submission order
