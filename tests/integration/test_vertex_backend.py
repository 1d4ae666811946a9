"""The Vertex AI backend against a fake of the Vertex AI REST API: the real SDK over real HTTP,
each pipeline's tasks run for real (``tests/vertex_fake.py``, ``tests/kfp_executor.py``)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlops.backends.base import (
    BackendUnavailable,
    PlanStep,
    RunObservation,
    RunPlan,
)
from mlops.backends.kfp_spec import compile_plan, pipeline_arguments
from mlops.backends.vertex import LABEL_RUN, VertexBackend, endpoint_of, job_id_for
from tests.conftest import ROOT, base_settings, free_port
from tests.vertex_fake import BUCKET, LOCATION, PROJECT, PROJECT_NUMBER, VertexFake

pytestmark = pytest.mark.slow

IMAGE = "registry.example/mlops:test"
SERVICE_ACCOUNT = "pipelines@mlops-test.iam.gserviceaccount.com"
TESTING = "mlops.steps.library.testing"
RUN_ID = "0b8a6f52-1c1e-4d7e-9a57-3f1f0f0e2a11"


def step(
    name: str,
    function: str,
    depends_on: list[str] | None = None,
    *,
    retries: int = 0,
    **kwargs: Any,
) -> PlanStep:
    return PlanStep(
        name=name,
        type="python",
        params={"callable": f"{TESTING}:{function}", "kwargs": kwargs},
        depends_on=depends_on or [],
        retries=retries,
        backoff_seconds=0.1,
        max_backoff_seconds=0.2,
        timeout_seconds=120,
    )


def make_plan(tmp_path: Path, *steps: PlanStep, run_id: str = RUN_ID) -> RunPlan:
    return RunPlan(
        run_id=run_id,
        pipeline="churn_model",
        version=3,
        description="churn_model version 3 (mlops)",
        params={"n": 3},
        steps=list(steps),
        artifact_root=str(tmp_path / "artifacts"),
    )


def settings_for(tmp_path: Path, endpoint: str, **overrides: Any) -> Any:
    vertex = {
        "project": PROJECT,
        "region": LOCATION,
        "pipeline_root": f"gs://{BUCKET}/pipelines",
        "image": IMAGE,
        "service_account": SERVICE_ACCOUNT,
        "api_endpoint": endpoint,
        "poll_seconds": 0.2,
        "request_timeout_seconds": 5,
        **overrides,
    }
    return base_settings(tmp_path, vertex=vertex)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[VertexFake]:
    with VertexFake(tmp_path / "vertex") as running:
        yield running


@pytest.fixture
async def backend(fake: VertexFake, tmp_path: Path) -> Any:
    vertex = VertexBackend(settings_for(tmp_path, fake.url))
    await vertex.start()
    yield vertex
    await vertex.close()


async def observe_until(
    backend: VertexBackend,
    external_id: str,
    plan: RunPlan,
    done: Callable[[RunObservation], bool] = lambda seen: (
        seen.status in ("succeeded", "failed", "cancelled")
    ),
    timeout: float = 60,
    seen: list[RunObservation] | None = None,
) -> RunObservation:
    deadline = time.monotonic() + timeout
    while True:
        observation = await backend.observe(external_id, plan)
        if seen is not None:
            seen.append(observation)
        if done(observation):
            return observation
        assert time.monotonic() < deadline, f"still {observation} after {timeout} s"
        await asyncio.sleep(0.1)


async def test_the_compiled_plan_is_submitted_and_a_chain_runs_to_success(
    backend: VertexBackend, fake: VertexFake, tmp_path: Path
) -> None:
    plan = make_plan(
        tmp_path,
        step("extract", "echo", v="{{ params.n }}"),
        step("clean_data", "echo", ["extract"], w="{{ steps.extract.outputs.v }}"),
        step("train", "echo", ["clean_data"], x="{{ steps.clean_data.outputs.w }}"),
    )
    job_id = job_id_for(plan)
    external_id = await backend.submit(plan)
    assert external_id == f"projects/{PROJECT_NUMBER}/locations/{LOCATION}/pipelineJobs/{job_id}"

    first = await backend.observe(external_id, plan)
    assert first.status in ("queued", "running")
    assert first.steps["train"].status == "pending"

    body = fake.job(job_id).body
    assert body["pipelineSpec"] == compile_plan(plan, IMAGE)
    assert body["runtimeConfig"]["parameterValues"] == pipeline_arguments(plan)
    assert body["runtimeConfig"]["gcsOutputDirectory"] == f"gs://{BUCKET}/pipelines"
    assert body["displayName"] == "churn_model v3"
    assert body["serviceAccount"] == SERVICE_ACCOUNT
    assert body["labels"] == {
        "managed-by": "mlops",
        LABEL_RUN: RUN_ID,
        "mlops-pipeline": "churn_model",
        "mlops-version": "3",
    }
    [create] = [path for method, path in fake.requests if method == "POST"]
    assert create.startswith(
        f"/v1/projects/{PROJECT}/locations/{LOCATION}/pipelineJobs?pipelineJobId={job_id}&"
    )
    assert not [path for _, path in fake.requests if path.startswith("/storage/")]

    final = await observe_until(backend, external_id, plan)
    assert final.status == "succeeded", final
    assert final.error is None
    assert set(final.steps) == {"extract", "clean_data", "train"}
    assert {name: seen.outputs for name, seen in final.steps.items()} == {
        "extract": {"v": 3},
        "clean_data": {"w": 3},
        "train": {"x": 3},
    }
    previous_end = None
    for name in ("extract", "clean_data", "train"):
        seen = final.steps[name]
        assert (seen.status, seen.attempts, seen.error) == ("succeeded", 1, None)
        assert seen.started_at is not None and seen.finished_at is not None
        assert seen.started_at.tzinfo == UTC and type(seen.started_at).__name__ == "datetime"
        assert seen.started_at <= seen.finished_at
        if previous_end is not None:
            assert previous_end <= seen.started_at  # a chain: one after the other
        previous_end = seen.finished_at


async def test_retries_are_counted_and_a_failed_step_fails_the_run(
    backend: VertexBackend, fake: VertexFake, tmp_path: Path
) -> None:
    plan = make_plan(
        tmp_path,
        step("flaky", "fail_until", retries=2, attempt=2),
        step("broken", "fail", ["flaky"], retries=2, message="boom"),
        step("after", "echo", ["broken"]),
    )
    external_id = await backend.submit(plan)
    seen: list[RunObservation] = []
    final = await observe_until(backend, external_id, plan, seen=seen)

    assert final.status == "failed"
    assert "broken" in (final.error or "")
    flaky, broken, after = (final.steps[name] for name in ("flaky", "broken", "after"))
    assert (flaky.status, flaky.attempts, flaky.outputs) == ("succeeded", 2, {"attempt": 2})
    assert (broken.status, broken.attempts) == ("failed", 3)
    assert broken.error == "boom"  # the step's own words, not only the container's exit status
    assert broken.started_at is not None and broken.finished_at is not None
    assert after.status == "skipped"
    assert after.attempts == 0
    # while Vertex retried, the step was running and said why its last attempt failed
    retrying = [
        observation.steps["broken"]
        for observation in seen
        if observation.steps["broken"].status == "running"
        and observation.steps["broken"].attempts >= 2
    ]
    assert retrying, "never saw the step between retries"
    assert retrying[-1].error is not None and retrying[-1].error.endswith("failed: boom")


async def test_a_crashed_step_and_a_failure_without_the_artifact_store(
    backend: VertexBackend, fake: VertexFake, tmp_path: Path
) -> None:
    plan = make_plan(tmp_path, step("crash", "crash"))
    external_id = await backend.submit(plan)
    final = await observe_until(backend, external_id, plan)
    assert final.status == "failed"
    crash = final.steps["crash"]
    assert (crash.status, crash.attempts) == ("failed", 1)
    assert crash.error == "the step process exited with status 3 without a result"
    # where the artifact store cannot be read, Vertex AI's own words are the reason
    shutil.rmtree(tmp_path / "artifacts")
    elsewhere = VertexBackend(settings_for(tmp_path, fake.url))
    try:
        final = await elsewhere.observe(external_id, plan)
    finally:
        await elsewhere.close()
    assert final.steps["crash"].error == (
        "The replica workerpool0-0 exited with a non-zero status of 3. "
        "To find out more about why your job exited please check the logs."
    )


async def test_cancel_stops_the_running_job(
    backend: VertexBackend, fake: VertexFake, tmp_path: Path
) -> None:
    plan = make_plan(tmp_path, step("nap", "sleep", seconds=60), step("after", "echo", ["nap"]))
    external_id = await backend.submit(plan)
    await observe_until(
        backend, external_id, plan, lambda seen: seen.steps["nap"].status == "running"
    )
    started = time.monotonic()
    await backend.cancel(external_id)
    final = await observe_until(backend, external_id, plan, timeout=30)
    assert time.monotonic() - started < 15
    assert final.status == "cancelled"
    assert final.steps["nap"].status == "cancelled"
    assert final.steps["nap"].finished_at is not None
    assert final.steps["after"].status == "cancelled"
    assert fake.wait(job_id_for(plan), timeout=10) == "CANCELED"
    await backend.cancel(external_id)  # over already: left alone, no error


async def test_submitting_again_adopts_the_first_job(
    backend: VertexBackend, fake: VertexFake, tmp_path: Path
) -> None:
    plan = make_plan(tmp_path, step("one", "echo", v=1))
    first = await backend.submit(plan)
    restarted = VertexBackend(settings_for(tmp_path, fake.url))  # as after a crash
    await restarted.start()
    try:
        assert await restarted.submit(plan) == first
        assert len(fake.jobs) == 1
        final = await observe_until(restarted, first, plan)
        assert final.status == "succeeded"
    finally:
        await restarted.close()
    assert [method for method, path in fake.requests if "pipelineJobId=" in path] == ["POST"] * 2


async def test_a_job_of_another_run_with_the_same_id_is_not_adopted(
    backend: VertexBackend, fake: VertexFake, tmp_path: Path
) -> None:
    plan = make_plan(tmp_path, step("one", "echo", v=1))
    spec = compile_plan(plan, IMAGE)
    response = httpx.post(
        f"{fake.url}/v1/projects/{PROJECT}/locations/{LOCATION}/pipelineJobs",
        params={"pipelineJobId": job_id_for(plan)},
        json={
            "displayName": "someone else's",
            "pipelineSpec": spec,
            "labels": {LABEL_RUN: "another-run"},
            "runtimeConfig": {
                "gcsOutputDirectory": f"gs://{BUCKET}/x",
                "parameterValues": pipeline_arguments(plan),
            },
        },
    )
    assert response.status_code == 200, response.text
    with pytest.raises(BackendUnavailable, match="not run") as caught:
        await backend.submit(plan)
    assert not caught.value.transient


def test_job_ids_are_valid_vertex_ids() -> None:
    def plan_of(run_id: str) -> RunPlan:
        return RunPlan(run_id, "p", 1, "", {}, [], "artifacts")

    assert job_id_for(plan_of(RUN_ID)) == f"mlops-{RUN_ID}"
    odd = [job_id_for(plan_of(text)) for text in ("Run_1", "run 1", "x" * 300, "---", "RUN_1")]
    assert len(set(odd)) == len(odd)
    for job_id in odd:
        assert job_id.startswith("mlops-") and len(job_id) <= 128
        assert all(c.islower() or c.isdigit() or c == "-" for c in job_id), job_id


async def test_an_unreachable_endpoint_is_transient(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}")
    plan = make_plan(tmp_path, step("one", "echo"))
    vertex = VertexBackend(settings)
    await vertex.start()
    try:
        started = time.monotonic()
        for call in (
            vertex.submit(plan),
            vertex.observe(f"projects/{PROJECT}/locations/{LOCATION}/pipelineJobs/x", plan),
            vertex.cancel(f"projects/{PROJECT}/locations/{LOCATION}/pipelineJobs/x"),
        ):
            with pytest.raises(BackendUnavailable, match=r"Vertex AI at .* is unreachable") as e:
                await call
            assert e.value.transient
        assert time.monotonic() - started < 5  # no SDK retry loop, no bucket check
        health = await VertexBackend.check_health(settings)
        assert not health.ok and "unreachable" in health.detail
    finally:
        await vertex.close()


@pytest.mark.parametrize("status", ["UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED", "ABORTED"])
async def test_server_errors_and_throttling_are_transient(
    backend: VertexBackend, fake: VertexFake, tmp_path: Path, status: str
) -> None:
    plan = make_plan(tmp_path, step("one", "echo", v=1))
    fake.inject(status, "try again later")
    with pytest.raises(BackendUnavailable, match=f"Vertex AI answered .* {status}") as caught:
        await backend.submit(plan)
    assert caught.value.transient
    external_id = await backend.submit(plan)  # the next attempt goes through
    fake.inject(status, "try again later")
    with pytest.raises(BackendUnavailable) as caught:
        await backend.observe(external_id, plan)
    assert caught.value.transient
    assert (await observe_until(backend, external_id, plan)).status == "succeeded"


async def test_permission_denied_is_not_transient(fake: VertexFake, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, fake.url, project="someone-elses-project")
    plan = make_plan(tmp_path, step("one", "echo"))
    vertex = VertexBackend(settings)
    await vertex.start()
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await vertex.submit(plan)
        assert not caught.value.transient
        message = str(caught.value)
        assert message.startswith("Vertex AI answered 403 PERMISSION_DENIED when creating")
        assert "aiplatform.pipelineJobs.create" in message and "Vertex AI User" in message
        assert not fake.jobs
    finally:
        await vertex.close()
    health = await VertexBackend.check_health(settings)
    assert not health.ok and "403" in health.detail


async def test_an_invalid_job_is_not_transient(fake: VertexFake, tmp_path: Path) -> None:
    vertex = VertexBackend(settings_for(tmp_path, fake.url, pipeline_root="/not/a/bucket"))
    await vertex.start()
    try:
        with pytest.raises(BackendUnavailable, match="400 INVALID_ARGUMENT") as caught:
            await vertex.submit(make_plan(tmp_path, step("one", "echo")))
        assert not caught.value.transient
        with pytest.raises(BackendUnavailable, match="404 NOT_FOUND") as caught:
            await vertex.observe(
                f"projects/{PROJECT}/locations/{LOCATION}/pipelineJobs/nope",
                make_plan(tmp_path, step("one", "echo")),
            )
        assert not caught.value.transient
    finally:
        await vertex.close()


async def test_health(fake: VertexFake, tmp_path: Path) -> None:
    health = await VertexBackend.check_health(settings_for(tmp_path, fake.url))
    assert health.ok, health.detail
    assert f"projects/{PROJECT}/locations/{LOCATION}" in health.detail
    assert ("GET", f"/v1/projects/{PROJECT}/locations/{LOCATION}/pipelineJobs") in [
        (method, path.split("?")[0]) for method, path in fake.requests
    ]
    fake.inject("UNAVAILABLE", "down for maintenance")
    health = await VertexBackend.check_health(settings_for(tmp_path, fake.url))
    assert not health.ok and "503" in health.detail and "down for maintenance" in health.detail


async def test_without_google_credentials_the_backend_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    settings = settings_for(tmp_path, None)  # Google's endpoint: real credentials wanted
    with pytest.raises(BackendUnavailable, match="no Google Cloud credentials") as caught:
        await VertexBackend(settings).start()
    assert not caught.value.transient and "missing.json" in str(caught.value)
    health = await VertexBackend.check_health(settings)
    assert not health.ok and "GOOGLE_APPLICATION_CREDENTIALS" in health.detail
    assert endpoint_of(settings.vertex) == f"{LOCATION}-aiplatform.googleapis.com"


def test_the_fake_serves_the_bucket_check_of_the_sdk(
    fake: VertexFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``PipelineJob.submit()`` (not used by the backend) gets the pipeline root's bucket."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake.url)
    client = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
    assert client.bucket(BUCKET).exists()
    assert not client.bucket("another-bucket").exists()


def test_importing_the_backend_loads_no_google_sdk() -> None:
    code = (
        "import sys, mlops.backends.vertex\n"
        # google and google.cloud are namespaces a .pth file of the SDK sets up at start
        "loaded = [m for m in sys.modules if m.startswith('google.') and m != 'google.cloud']\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
