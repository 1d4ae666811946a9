"""The ``airflow`` backend against a real Airflow 3.3.2: what the contract suite does not cover.

Token renewal, adoption of a DAG run triggered before a crash, a DAG Airflow has not parsed,
an Airflow that is down, and a service restart while a run goes on in Airflow.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from mlops.app import create_app
from mlops.backends.airflow import AirflowBackend, dag_id_for, dag_run_id_for
from mlops.backends.base import BackendUnavailable, PlanStep, RunPlan
from mlops.core.settings import Settings
from tests.airflow_server import AirflowServer
from tests.api.test_pipeline_runs import apply, python_step, start, steps_of, wait_for
from tests.conftest import ADMIN, base_settings, client_for, free_port, running_app

pytestmark = pytest.mark.slow


def airflow_block(airflow: AirflowServer, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "url": airflow.url,
        "username": airflow.username,
        "password": airflow.password,
        "specs_dir": airflow.specs_dir,  # type: ignore[attr-defined]
        "poll_seconds": 0.5,
        "dag_prefix": f"it_{uuid.uuid4().hex[:8]}",
        **extra,
    }


def settings_for(airflow: AirflowServer, tmp_path: Path, **extra: Any) -> Settings:
    return base_settings(
        tmp_path, pipeline_backend="airflow", airflow=airflow_block(airflow, tmp_path, **extra)
    )


def plan(tmp_path: Path, *steps: PlanStep, params: dict[str, Any] | None = None) -> RunPlan:
    return RunPlan(
        run_id=str(uuid.uuid4()),
        pipeline="direct",
        version=1,
        description="driven by the backend directly",
        params=params or {},
        steps=list(steps),
        artifact_root=str(tmp_path / "artifacts"),
    )


def echo(name: str, depends_on: list[str] | None = None, **kwargs: Any) -> PlanStep:
    return PlanStep(
        name=name,
        type="python",
        params={"callable": "mlops.steps.library.testing:echo", "kwargs": kwargs},
        depends_on=depends_on or [],
        retries=0,
        backoff_seconds=0.1,
        max_backoff_seconds=1,
        timeout_seconds=60,
    )


async def until_submitted(backend: AirflowBackend, run: RunPlan, timeout: float = 45) -> str:
    """Submit as the engine does: transient refusals (the dag-processor has not parsed the new
    plan yet, a busy database) are retried, anything else fails the test."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await backend.submit(run)
        except BackendUnavailable as exc:
            assert exc.transient, exc
            assert asyncio.get_running_loop().time() < deadline, exc
            await asyncio.sleep(0.5)


async def test_a_resubmitted_run_adopts_the_dag_run_and_tokens_are_renewed(
    airflow: AirflowServer, tmp_path: Path
) -> None:
    backend = AirflowBackend(settings_for(airflow, tmp_path))
    await backend.start()
    run = plan(tmp_path, echo("a", x="{{ params.x }}"), params={"x": 7})
    first = await until_submitted(backend, run)
    assert first == f"{dag_id_for(run, backend.config.dag_prefix)}/{dag_run_id_for(run)}"
    backend._token = airflow.expired_token()  # Airflow answers 401: the backend gets a new one
    assert await until_submitted(backend, run) == first  # Airflow's 409: the DAG run adopted
    while (seen := await backend.observe(first, run)).status != "succeeded":
        assert seen.status in ("queued", "running"), seen
        await asyncio.sleep(0.3)
    assert seen.steps["a"].outputs == {"x": 7}
    assert seen.steps["a"].attempts == 1 and seen.steps["a"].finished_at is not None


async def test_wrong_credentials_are_a_permanent_failure(
    airflow: AirflowServer, tmp_path: Path
) -> None:
    backend = AirflowBackend(settings_for(airflow, tmp_path, password="not-the-password"))
    with pytest.raises(BackendUnavailable) as raised:
        await backend.submit(plan(tmp_path, echo("a")))
    assert not raised.value.transient
    assert "refused a token" in str(raised.value)
    health = await AirflowBackend.check_health(
        settings_for(airflow, tmp_path, password="not-the-password")
    )
    assert not health.ok and "refused the credentials" in health.detail


async def test_an_unreachable_airflow_fails_the_run_after_the_grace_period(
    tmp_path: Path,
) -> None:
    settings = base_settings(
        tmp_path,
        pipeline_backend="airflow",
        airflow={
            "url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
            "username": "admin",
            "password": "secret",
            "specs_dir": tmp_path / "specs",
            "poll_seconds": 0.2,
            "give_up_seconds": 2,
            "request_timeout_seconds": 1,
        },
    )
    async with running_app(settings) as app, client_for(app) as client:
        await apply(client, {"name": "nowhere", "steps": [python_step("a", "noop")]})
        run = await start(client, "nowhere")
        waiting = await wait_for(client, run["id"], {"running", "queued"}, timeout=10)
        await asyncio.sleep(0.5)
        waiting = (await client.get(f"/api/v1/pipelines/runs/{run['id']}", headers=ADMIN)).json()
        assert "unreachable" in (waiting["error"] or ""), waiting
        assert waiting["error"].endswith("retrying"), waiting
        final = await wait_for(client, run["id"], timeout=20)
        assert final["status"] == "failed", final
        assert "unreachable" in final["error"] and "gave up after" in final["error"], final
        assert steps_of(final)["a"]["status"] == "skipped"
        listed = (await client.get("/api/v1/pipelines/backends", headers=ADMIN)).json()
        mine = next(b for b in listed if b["name"] == "airflow")
        assert mine["configured"] and not mine["healthy"] and "unreachable" in mine["detail"]


async def test_a_run_goes_on_in_airflow_while_the_service_restarts(
    airflow: AirflowServer, tmp_path: Path
) -> None:
    settings = settings_for(airflow, tmp_path)
    spec = {
        "name": "restart",
        "steps": [
            python_step("slow", "sleep", kwargs={"seconds": 3}),
            python_step("after", "echo", ["slow"], kwargs={"done": True}),
        ],
    }
    async with running_app(settings) as app, client_for(app) as client:
        await apply(client, spec)
        run = await start(client, "restart")
        deadline = asyncio.get_running_loop().time() + 60
        while steps_of(await wait_for(client, run["id"], {"running"}))["slow"]["status"] != (
            "running"
        ):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.2)
    restarted = create_app(settings)  # a new service on the same database (no reset)
    async with restarted.router.lifespan_context(restarted), client_for(restarted) as client:
        final = await wait_for(client, run["id"], timeout=60)
        assert final["status"] == "succeeded", final
        steps = steps_of(final)
        assert steps["after"]["outputs"] == {"done": True}
        assert steps["slow"]["attempts"] == 1  # adopted, not run again
