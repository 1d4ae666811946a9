"""A study interrupted by a service restart resumes and finishes its trials.

The service is killed with ``kill -9`` in the middle of a search and restarted on the same
stores; the engine retries the interrupted search steps and the job completes its trials and
registers its model. Two ways to die:

- ``machine``: the service and its step workers die together (a crashed machine or
  container). The trials the dead workers were running are failed when their search steps are
  retried, without an error and without counting; the trials finished before are kept.
- ``service``: only the service process is killed. Its workers die with it (they ask the
  kernel for that when they start), so no orphan goes on running a step nobody waits for;
  from there on it is the same as ``machine``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, base_settings, flush_redis, free_port, run_blocking
from tests.processes import service_env, start_service, stop_service

pytestmark = pytest.mark.slow

N_TRIALS = 8
JOB: dict[str, Any] = {
    "dataset": "sklearn://breast_cancer",
    "target": "target",
    "task": "classification",
    "estimator": "random_forest",
    # small forests: a trial (3 folds) takes about half a second on an idle core
    "search_space": {
        "n_estimators": {"type": "int", "low": 60, "high": 120},
        "max_depth": {"type": "int", "low": 2, "high": 8},
    },
    "n_trials": N_TRIALS,
    "cv_folds": 3,
    "sampler": {"type": "tpe", "seed": 3},
    "parallelism": 2,
    "model_name": "bc-rf-restart",
}
FINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(
    params=[("sqlite", "machine"), ("postgres", "machine"), ("sqlite", "service")],
    ids=["sqlite-machine", "postgres-machine", "sqlite-service"],
)
def case(request: pytest.FixtureRequest) -> Iterator[tuple[dict[str, str], str]]:
    """(the service's store settings, what the kill takes down)"""
    store, kill = request.param
    if store == "sqlite":
        yield {}, kill
        return
    base = str(request.getfixturevalue("postgres_url"))
    name = f"{base.rsplit('/', 1)[1]}_restart"
    run_blocking(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    run_blocking(f'CREATE DATABASE "{name}"')
    redis_url = str(request.getfixturevalue("redis_url"))
    flush_redis(redis_url)
    url = f"{base.rsplit('/', 1)[0]}/{name}"
    yield {"MLOPS_DATABASE_URL": url, "MLOPS_REDIS_URL": redis_url}, kill
    run_blocking(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def children(pid: int) -> list[int]:
    """The direct children of ``pid``: the local backend's step workers."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"{what}: {[p for p in pids if alive(p)]}"
        time.sleep(0.1)


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def kill_9(service: subprocess.Popen[bytes], with_workers: bool) -> list[int]:
    """``kill -9`` the service (and its workers with it); return the workers' pids. Nothing
    the service started outlives it: neither its workers nor their trial-logging processes."""
    workers = children(service.pid)
    below = [pid for worker in workers for pid in descendants(worker)]
    service.send_signal(signal.SIGKILL)
    if with_workers:
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
    service.wait(timeout=10)
    wait_gone(workers, 10, "workers outlived the service")
    wait_gone(below, 10, "processes the workers started outlived them")
    return workers


def study_trials(optuna_url: str, job_id: str) -> dict[int, tuple[str, float | None]]:
    """The study's trials, read straight from Optuna's storage: {number: (state, value)}."""
    import optuna

    storage = optuna.storages.RDBStorage(optuna_url)
    try:
        study_id = storage.get_study_id_from_name(f"job-{job_id}")
        return {t.number: (t.state.name, t.value) for t in storage.get_all_trials(study_id)}
    finally:
        storage.engine.dispose()


def get_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/training/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_search_killed_mid_study_resumes_after_a_restart(
    case: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    stores, kill = case
    env = service_env(
        tmp_path / "data",
        MLOPS_LOCAL_WORKERS="2",
        **stores,
    )
    optuna_url = base_settings(
        tmp_path, database_url=stores.get("MLOPS_DATABASE_URL")
    ).optuna_storage_url
    port = free_port()
    log = tmp_path / "service.log"
    service = start_service(env, port, log)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=ADMIN, timeout=30) as client:
        try:
            response = client.post("/api/v1/training/jobs", json=JOB)
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            deadline = time.monotonic() + 90
            while True:  # mid-search: some trials finished, one running (to leave stale)
                job = get_job(client, job_id)
                progress = job["progress"] or {}
                if progress.get("trials_finished", 0) >= 2 and progress["trials_running"] >= 1:
                    break
                assert job["status"] not in FINAL, job
                assert time.monotonic() < deadline, job
                time.sleep(0.2)
            workers = kill_9(service, with_workers=kill == "machine")
        except BaseException:
            if service.poll() is None:
                kill_9(service, with_workers=True)
            raise
        assert len(workers) == 2, workers  # the local backend's pool

        before = study_trials(optuna_url, job_id)
        kept = {n: t for n, t in before.items() if t[0] in {"COMPLETE", "PRUNED"}}
        left_running = {n for n, t in before.items() if t[0] == "RUNNING"}
        assert 2 <= len(kept) < N_TRIALS, before
        assert left_running, f"no trial was running at the kill: {before}"

        service = start_service(env, port, log)
        try:
            deadline = time.monotonic() + 120
            while (job := get_job(client, job_id))["status"] not in FINAL:
                assert time.monotonic() < deadline, job
                time.sleep(0.5)
            trials = client.get(f"/api/v1/training/jobs/{job_id}/trials", params={"limit": 200})
            run = client.get(f"/api/v1/pipelines/runs/{job['pipeline_run_id']}").json()
            versions = client.get(f"/api/v1/training/models/{JOB['model_name']}/versions").json()
        finally:
            stop_service(service)
            for pid in workers:  # orphans a failure above left behind
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)

    assert job["status"] == "succeeded", job
    assert job["error"] is None, job
    items = trials.json()["items"]
    by_number = {t["number"]: t for t in items}
    assert trials.json()["total"] == len(by_number) == len(items)
    assert sum(t["state"] in {"complete", "pruned"} for t in items) == N_TRIALS, items
    assert not any(t["state"] == "running" for t in items), items
    for number, (state, value) in kept.items():  # done before the kill: kept as they were
        assert (by_number[number]["state"], by_number[number]["value"]) == (state.lower(), value)
    failed = [t for t in items if t["state"] == "fail"]
    assert all(t["error"] is None for t in failed), failed  # stale, not an objective's error
    # what the dead workers were running failed as stale, uncounted
    assert {t["number"] for t in failed} == left_running, items

    progress, result = job["progress"], job["result"]
    assert progress["trials_complete"] + progress["trials_pruned"] == N_TRIALS, progress
    assert progress["trials_failed"] == 0, progress  # stale trials are not the objective's
    assert progress["trials_finished"] == N_TRIALS, progress
    assert progress["trials_running"] == 0, progress
    assert result["model_version"] == "1", result
    assert by_number[result["best_trial"]]["state"] == "complete", result
    assert versions["total"] == 1, versions
    assert versions["items"][0]["tags"]["mlops.job_id"] == job_id

    assert run["status"] == "succeeded", run
    attempts = {s["name"]: (s["status"], s["attempts"]) for s in run["steps"]}
    assert attempts == {
        "prepare": ("succeeded", 1),
        "search-1": ("succeeded", 2),  # interrupted, then retried after the restart
        "search-2": ("succeeded", 2),
        "finalize": ("succeeded", 1),
    }, run["steps"]
