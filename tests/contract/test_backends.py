"""One suite of behaviours, run against every backend that can run here.

- ``local``: the service's own worker processes;
- ``kubernetes``: the real ``kubernetes`` client against a fake API server over HTTP
  (``tests/kmock_cluster.py``), whose fake kubelet really runs each Job's command;
- ``airflow``: a real Apache Airflow 3.3.2 (``tests/airflow_server.py``) running the project's
  ``airflow_dags/``, driven through the official client;
- ``kubeflow``: the real ``kfp.Client`` against a fake of the KFP REST API
  (``tests/kfp_fake.py``) that runs the submitted spec for real, each task a local process;
- ``vertex``: the real ``google-cloud-aiplatform`` SDK over REST against a fake of the Vertex AI
  API (``tests/vertex_fake.py``) that runs the submitted spec the same way.

Kubeflow and Vertex AI have no logs API: there the cases check the service's 501 instead.

Each case applies a pipeline that names no backend, so it runs on the service's default.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlops.core.settings import Settings
from tests.airflow_server import AirflowServer
from tests.api.test_pipeline_runs import apply, python_step, start, steps_of, wait_for
from tests.conftest import ADMIN, base_settings, client_for, running_app
from tests.kfp_fake import KfpFake
from tests.kmock_cluster import FakeCluster
from tests.vertex_fake import BUCKET, VertexFake

pytestmark = pytest.mark.slow

BACKENDS = ["local", "kubernetes", "airflow", "kubeflow", "vertex"]


def always() -> bool:
    return True


class Target:
    """A service on one backend, and how to see from the backend's side that a step runs."""

    def __init__(
        self,
        name: str,
        client: httpx.AsyncClient,
        *,
        has_logs: bool = True,
        started: Callable[[], bool] = always,
        stopped: Callable[[str], bool] | None = None,
    ):
        self.name = name
        self.client = client
        self.has_logs = has_logs
        self.started = started  # the step's process is running on the backend
        self.stopped = stopped or (lambda run_id: True)  # ... and stopped there after a cancel


@pytest.fixture(params=BACKENDS)
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    make = {
        "local": local_target,
        "kubernetes": kubernetes_target,
        "airflow": airflow_target,
        "kubeflow": kubeflow_target,
        "vertex": vertex_target,
    }[request.param]
    async with make(request, tmp_path) as target:
        yield target


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings) as app, client_for(app) as client:
        yield client


@contextlib.asynccontextmanager
async def local_target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    async with serving(base_settings(tmp_path)) as client:
        yield Target("local", client)


@contextlib.asynccontextmanager
async def kubernetes_target(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Target]:
    async with FakeCluster() as cluster:
        settings = base_settings(
            tmp_path,
            pipeline_backend="kubernetes",
            kubernetes={
                "namespace": cluster.namespace,
                "image": "mlops:contract",
                "kubeconfig": cluster.kubeconfig(tmp_path / "kubeconfig"),
            },
        )
        async with serving(settings) as client:
            yield Target(
                "kubernetes",
                client,
                started=lambda: bool(cluster.started),
                stopped=lambda run_id: bool(cluster.killed),  # its Job deleted, process stopped
            )


@contextlib.asynccontextmanager
async def airflow_target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    airflow: AirflowServer = request.getfixturevalue("airflow")
    prefix = f"contract_{uuid.uuid4().hex[:8]}"
    settings = base_settings(
        tmp_path,
        pipeline_backend="airflow",
        airflow={
            "url": airflow.url,
            "username": airflow.username,
            "password": airflow.password,
            "specs_dir": airflow.specs_dir,  # type: ignore[attr-defined]
            "poll_seconds": 0.5,
            "dag_prefix": prefix,
        },
    )

    def stopped(run_id: str) -> bool:
        """The DAG run is failed and its task no longer running, as Airflow's API says."""
        from airflow_client import client as af

        api = af.ApiClient(af.Configuration(host=airflow.url, access_token=airflow.token()))
        dag_id, dag_run_id = f"{prefix}__cancel__v1", f"mlops-{run_id}"
        dag_run = af.DagRunApi(api).get_dag_run(dag_id, dag_run_id)
        task = af.TaskInstanceApi(api).get_task_instance(dag_id, dag_run_id, "wait")
        state = getattr(task.state, "value", None)
        return str(dag_run.state.value) == "failed" and state != "running"

    async with serving(settings) as client:
        yield Target("airflow", client, stopped=stopped)


@contextlib.asynccontextmanager
async def kubeflow_target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    with KfpFake(tmp_path / "kfp") as fake:
        settings = base_settings(
            tmp_path,
            pipeline_backend="kubeflow",
            kubeflow={"host": fake.url, "image": "mlops:contract", "poll_seconds": 0.3},
        )

        def stopped(run_id: str) -> bool:
            """The KFP run is cancelled and none of its task processes runs any more."""
            run = next(r for r in fake.runs.values() if r.display_name == f"mlops-{run_id}")
            tasks = run.execution.snapshot().values()
            return run.execution.state == "CANCELED" and all(t.state != "RUNNING" for t in tasks)

        async with serving(settings) as client:
            yield Target("kubeflow", client, has_logs=False, stopped=stopped)


@contextlib.asynccontextmanager
async def vertex_target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    with VertexFake(tmp_path / "vertex") as fake:
        settings = base_settings(
            tmp_path,
            pipeline_backend="vertex",
            vertex={
                "project": fake.project,
                "region": fake.location,
                "pipeline_root": f"gs://{BUCKET}/pipelines",
                "image": "mlops:contract",
                "api_endpoint": fake.url,
                "poll_seconds": 0.3,
            },
        )

        def stopped(run_id: str) -> bool:
            """The PipelineJob is cancelled and none of its task processes runs any more."""
            job = next(job for job in fake.jobs.values() if run_id in job.job_id)
            tasks = job.execution.snapshot().values()
            return job.execution.state == "CANCELED" and all(t.state != "RUNNING" for t in tasks)

        async with serving(settings) as client:
            yield Target("vertex", client, has_logs=False, stopped=stopped)


async def logs_of(target: Target, run_id: str, step: str, **params: Any) -> str | None:
    """The step's log through the service; None (after checking the 501) without logs."""
    response = await target.client.get(
        f"/api/v1/pipelines/runs/{run_id}/steps/{step}/logs", params=params, headers=ADMIN
    )
    if not target.has_logs:
        assert response.status_code == 501, response.text
        assert f"not supported by the {target.name!r} backend" in response.json()["detail"]
        return None
    assert response.status_code == 200, response.text
    return response.text


async def run_pipeline(
    target: Target, spec: dict[str, Any], params: dict[str, Any] | None = None
) -> dict[str, Any]:
    await apply(target.client, spec)
    run = await start(target.client, spec["name"], params)
    return await wait_for(target.client, run["id"], timeout=90)


async def test_the_backend_is_healthy(target: Target) -> None:
    listed = (await target.client.get("/api/v1/pipelines/backends", headers=ADMIN)).json()
    mine = next(b for b in listed if b["name"] == target.name)
    assert mine["default"] and mine["configured"] and mine["healthy"], mine


async def test_a_chain_passes_outputs_along(target: Target) -> None:
    spec = {
        "name": "chain",
        "steps": [
            python_step("a", "echo", kwargs={"x": 1}),
            python_step("b", "echo", ["a"], kwargs={"x": "{{ steps.a.outputs.x }}", "y": 2}),
            python_step("c", "echo", ["b"], kwargs={"sum": "{{ steps.b.outputs.y }}"}),
        ],
    }
    run = await run_pipeline(target, spec)
    assert run["status"] == "succeeded", run
    steps = steps_of(run)
    assert steps["b"]["outputs"] == {"x": 1, "y": 2}
    assert steps["c"]["outputs"] == {"sum": 2}
    started = [steps[name]["started_at"] for name in "abc"]
    finished = [steps[name]["finished_at"] for name in "abc"]
    assert finished[0] <= started[1] and finished[1] <= started[2]  # one after the other


async def test_a_fan_out_runs_side_by_side_then_joins(target: Target) -> None:
    branches = [python_step(f"b{i}", "sleep", ["root"], kwargs={"seconds": 1}) for i in range(3)]
    spec = {
        "name": "fan-out",
        "steps": [
            python_step("root", "noop"),
            *branches,
            python_step("join", "echo", ["b0", "b1", "b2"], kwargs={"n": 3}),
        ],
    }
    run = await run_pipeline(target, spec)
    assert run["status"] == "succeeded", run
    steps = steps_of(run)
    assert steps["join"]["outputs"] == {"n": 3}
    starts = sorted(steps[f"b{i}"]["started_at"] for i in range(3))
    ends = sorted(steps[f"b{i}"]["finished_at"] for i in range(3))
    assert starts[1] < ends[0]  # at least two branches overlapped (2 local workers)


async def test_a_failing_step_is_retried_then_fails_with_its_error(target: Target) -> None:
    spec = {
        "name": "retries",
        "steps": [
            python_step(
                "flaky",
                "fail_until",
                kwargs={"attempt": 2},
                retries={"max": 2, "backoff_seconds": 0.1},
            ),
            python_step(
                "broken",
                "fail",
                ["flaky"],
                kwargs={"message": "bad input on purpose"},
                retries={"max": 1, "backoff_seconds": 0.1},
            ),
            python_step("after", "noop", ["broken"]),
        ],
    }
    run = await run_pipeline(target, spec)
    assert run["status"] == "failed", run
    steps = steps_of(run)
    assert (steps["flaky"]["status"], steps["flaky"]["attempts"]) == ("succeeded", 2)
    assert (steps["broken"]["status"], steps["broken"]["attempts"]) == ("failed", 2)
    assert "bad input on purpose" in steps["broken"]["error"]
    assert steps["after"]["status"] == "skipped"
    logs = await logs_of(target, run["id"], "flaky", attempt=1)
    assert logs is None or "attempt 1 fails on purpose" in logs, logs


async def test_a_step_over_its_timeout_is_stopped(target: Target) -> None:
    spec = {
        "name": "timeout",
        "steps": [python_step("slow", "sleep", kwargs={"seconds": 60}, timeout_seconds=1)],
    }
    started = time.monotonic()
    run = await run_pipeline(target, spec)
    assert time.monotonic() - started < 30
    slow = steps_of(run)["slow"]
    assert (run["status"], slow["status"]) == ("failed", "failed"), run
    assert "timed out" in slow["error"], slow


async def test_cancel_stops_the_running_step(target: Target) -> None:
    await apply(
        target.client,
        {"name": "cancel", "steps": [python_step("wait", "sleep", kwargs={"seconds": 60})]},
    )
    run = await start(target.client, "cancel")
    deadline = time.monotonic() + 30
    while True:  # the step really runs (on kubernetes: its Job's process has started)
        current = await wait_for(target.client, run["id"], {"running"})
        if steps_of(current)["wait"]["status"] == "running" and target.started():
            break
        assert time.monotonic() < deadline, current
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    cancelled = await target.client.post(
        f"/api/v1/pipelines/runs/{run['id']}/cancel", headers=ADMIN
    )
    assert cancelled.status_code == 200, cancelled.text
    final = await wait_for(target.client, run["id"])
    assert (final["status"], steps_of(final)["wait"]["status"]) == ("cancelled", "cancelled")
    deadline = time.monotonic() + 20
    while not target.stopped(run["id"]):  # stopped on the backend's side too
        assert time.monotonic() < deadline, f"{target.name} still runs the step"
        await asyncio.sleep(0.1)


async def test_parameters_and_logs_pass_through(target: Target) -> None:
    spec = {
        "name": "params",
        "params": {"greeting": "hello"},
        "steps": [
            python_step("say", "chatter", kwargs={"message": "{{ params.greeting }}"}),
        ],
    }
    run = await run_pipeline(target, spec, {"greeting": "grüß dich"})
    assert run["status"] == "succeeded", run
    assert steps_of(run)["say"]["outputs"] == {"message": "grüß dich"}
    logs = await logs_of(target, run["id"], "say")
    for line in ("stdout: grüß dich", "stderr: grüß dich", "subprocess: grüß dich"):
        assert logs is None or line in logs, logs
