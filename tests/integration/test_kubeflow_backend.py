"""The kubeflow backend with the real ``kfp.Client`` against a fake KFP API whose runs really run.

Each run's compiled spec is executed by ``tests/kfp_executor.py`` (every task a local
subprocess running ``python -m mlops.backends.remote_task``), so outputs really flow from task
to task, retries really retry and a cancel really kills the running step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlops.backends.base import BackendUnavailable, PlanStep, RunObservation, RunPlan
from mlops.backends.config import KubeflowConfig
from mlops.backends.kubeflow import KubeflowBackend
from tests.conftest import free_port
from tests.kfp_fake import KfpFake

pytestmark = pytest.mark.slow
TESTING = "mlops.steps.library.testing"
FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[KfpFake]:
    with KfpFake(tmp_path / "kfp", token="secret-token") as server:
        yield server


def settings_for(host: str, token: str | None = "secret-token", **extra: Any) -> Any:
    config = KubeflowConfig(
        host=host,
        image="registry.example/mlops:1",
        token=token,
        experiment="mlops-tests",
        request_timeout_seconds=5,
        **extra,
    )
    return SimpleNamespace(kubeflow=config)


def step(name: str, function: str, depends_on: list[str] | None = None, **options: Any) -> PlanStep:
    return PlanStep(
        name=name,
        type="python",
        params={"callable": f"{TESTING}:{function}", "kwargs": options.pop("kwargs", {})},
        depends_on=depends_on or [],
        retries=options.pop("retries", 0),
        backoff_seconds=0.1,
        max_backoff_seconds=1,
        timeout_seconds=options.pop("timeout_seconds", 120),
    )


def make_plan(tmp_path: Path, run_id: str, *steps: PlanStep) -> RunPlan:
    return RunPlan(
        run_id=run_id,
        pipeline="kfp-demo",
        version=2,
        description="kfp-demo version 2 (mlops)",
        params={"n": 7},
        steps=list(steps),
        artifact_root=str(tmp_path / "artifacts"),
    )


async def observe_until(
    backend: KubeflowBackend, external_id: str, plan: RunPlan, done: Any, timeout: float = 90
) -> RunObservation:
    deadline = time.monotonic() + timeout
    while True:
        observation = await backend.observe(external_id, plan)
        if done(observation) or time.monotonic() > deadline:
            return observation
        await asyncio.sleep(0.3)


async def test_a_chain_passes_outputs_and_retries(fake: KfpFake, tmp_path: Path) -> None:
    plan = make_plan(
        tmp_path,
        "run-chain",
        step("extract", "echo", kwargs={"rows": "{{ params.n }}"}),
        step("flaky_step", "fail_until", ["extract"], retries=2, kwargs={"attempt": 2}),
        step(
            "report",
            "echo",
            ["extract", "flaky_step"],
            kwargs={
                "rows": "{{ steps.extract.outputs.rows }}",
                "tries": "{{ steps.flaky_step.outputs.attempt }}",
            },
        ),
    )
    backend = KubeflowBackend(settings_for(fake.url))
    await backend.start()
    started = time.monotonic()
    external_id = await backend.submit(plan)
    observation = await observe_until(backend, external_id, plan, lambda o: o.status in FINAL)
    elapsed = time.monotonic() - started
    await backend.close()

    assert observation.status == "succeeded", observation
    assert observation.error is None
    steps = observation.steps
    assert {name: seen.status for name, seen in steps.items()} == {
        "extract": "succeeded",
        "flaky_step": "succeeded",
        "report": "succeeded",
    }
    assert (steps["extract"].attempts, steps["flaky_step"].attempts) == (1, 2)
    assert steps["extract"].outputs == {"rows": 7}
    assert steps["report"].outputs == {"rows": 7, "tries": 2}
    for seen in steps.values():
        assert seen.started_at is not None and seen.finished_at is not None
        assert seen.started_at.tzinfo is not None
    report_started = steps["report"].started_at
    extract_finished = steps["extract"].finished_at
    assert report_started is not None and extract_finished is not None
    assert extract_finished <= report_started
    run = fake.runs[external_id]
    assert run.display_name == f"mlops-{plan.run_id}"
    assert fake.experiments[run.experiment_id]["display_name"] == "mlops-tests"
    assert elapsed < 60


async def test_a_failed_step_fails_the_run_and_skips_the_rest(
    fake: KfpFake, tmp_path: Path
) -> None:
    plan = make_plan(
        tmp_path,
        "run-fail",
        step("check", "fail", kwargs={"message": "bad data"}),
        step("after", "echo", ["check"]),
    )
    backend = KubeflowBackend(settings_for(fake.url))
    external_id = await backend.submit(plan)
    observation = await observe_until(backend, external_id, plan, lambda o: o.status in FINAL)
    assert observation.status == "failed"
    assert observation.steps["check"].status == "failed"
    assert observation.steps["check"].error == "bad data"
    assert observation.steps["after"].status == "skipped"
    assert observation.error


async def test_cancel_stops_the_running_step(fake: KfpFake, tmp_path: Path) -> None:
    plan = make_plan(
        tmp_path,
        "run-cancel",
        step("slow", "sleep", kwargs={"seconds": 60}),
        step("never", "echo", ["slow"]),
    )
    backend = KubeflowBackend(settings_for(fake.url))
    external_id = await backend.submit(plan)
    running = await observe_until(
        backend, external_id, plan, lambda o: o.steps["slow"].status == "running"
    )
    assert running.status == "running"
    await backend.cancel(external_id)
    assert fake.wait_run(external_id, 30) == "CANCELED"
    observation = await backend.observe(external_id, plan)
    assert observation.status == "cancelled"  # stopped in KFP, not by the service
    assert observation.error == "the run was cancelled in Kubeflow Pipelines"
    assert observation.steps["slow"].status == "cancelled"
    assert observation.steps["never"].status in ("pending", "cancelled")
    terminations = [path for method, path in fake.requests if path.endswith(":terminate")]
    await backend.cancel(external_id)  # over: left alone
    assert [path for method, path in fake.requests if path.endswith(":terminate")] == terminations


async def test_submitting_again_adopts_the_first_run(fake: KfpFake, tmp_path: Path) -> None:
    plan = make_plan(tmp_path, "run-adopt", step("only", "noop"))
    first = await KubeflowBackend(settings_for(fake.url)).submit(plan)
    # a new process after a crash between submit and commit
    second = await KubeflowBackend(settings_for(fake.url)).submit(plan)
    assert first == second
    assert len(fake.runs) == 1
    assert len(fake.experiments) == 1
    fake.wait_run(first)


async def test_errors_transient_or_not(fake: KfpFake, tmp_path: Path) -> None:
    plan = make_plan(tmp_path, "run-errors", step("only", "noop"))
    backend = KubeflowBackend(settings_for(fake.url))
    external_id = await backend.submit(plan)

    fake.fail_next(503)
    with pytest.raises(BackendUnavailable) as caught:
        await backend.observe(external_id, plan)
    assert caught.value.transient
    assert "Kubeflow Pipelines answered 503" in str(caught.value)

    with pytest.raises(BackendUnavailable) as caught:
        await backend.observe("no-such-run", plan)
    assert not caught.value.transient
    assert "Kubeflow Pipelines answered 404" in str(caught.value)
    assert "run no-such-run not found" in str(caught.value)

    wrong = KubeflowBackend(settings_for(fake.url, token="wrong"))
    with pytest.raises(BackendUnavailable) as caught:
        await wrong.submit(plan)
    assert not caught.value.transient
    assert "401" in str(caught.value)
    fake.wait_run(external_id)


async def test_an_unreachable_host_is_transient(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    plan = make_plan(tmp_path, "run-nowhere", step("only", "noop"))
    backend = KubeflowBackend(settings_for(url))
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        await backend.submit(plan)
    assert caught.value.transient
    assert "unreachable" in str(caught.value)
    assert time.monotonic() - started < 10  # no five-times-five-seconds healthz retry
    health = await KubeflowBackend.check_health(settings_for(url))
    assert not health.ok
    assert "unreachable" in health.detail


async def test_health(fake: KfpFake) -> None:
    health = await KubeflowBackend.check_health(settings_for(fake.url))
    assert health.ok
    assert "single-user" in health.detail
    fake.fail_next(500)
    health = await KubeflowBackend.check_health(settings_for(fake.url))
    assert not health.ok
    assert "500" in health.detail


async def test_step_logs_are_not_supported(fake: KfpFake) -> None:
    backend = KubeflowBackend(settings_for(fake.url))
    assert backend.capabilities == frozenset()
    with pytest.raises(BackendUnavailable, match="not supported"):
        await backend.step_log("x", "y", 1)


def test_a_failed_attempt_with_retries_left_is_still_running(tmp_path: Path) -> None:
    """KFP may list a task as FAILED before its retry starts; the service must not see the
    step as over (it never revisits a failed step) until the run itself is over."""
    plan = make_plan(tmp_path, "run-between", step("flaky", "fail", retries=1))
    backend = KubeflowBackend(settings_for("http://127.0.0.1:9"))
    detail = SimpleNamespace(
        state="FAILED", start_time=None, end_time=None, create_time=None, error=None
    )
    between = backend._step("x", plan, plan.steps[0], detail, run_over=False)
    assert between.status == "running"
    over = backend._step("x", plan, plan.steps[0], detail, run_over=True)
    assert over.status == "failed"
    assert over.error == "failed in Kubeflow"
