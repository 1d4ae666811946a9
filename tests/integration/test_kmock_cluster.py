"""The fake cluster itself, through the official client (called in threads, as the backend does)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
from kubernetes import client, config, watch

from tests.kmock_cluster import FakeCluster, lowercase_bool_client

NS = "mlops"
PRINT_BOTH = "import sys; print('out'); print('err', file=sys.stderr)"


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    async with FakeCluster(NS) as cluster:
        yield cluster


@pytest.fixture
def api(cluster: FakeCluster, tmp_path: Path) -> Iterator[client.ApiClient]:
    """A client configured as the backend configures it: from a kubeconfig file."""
    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(cluster.kubeconfig(tmp_path)),
        client_configuration=configuration,
        persist_config=False,
    )
    api = lowercase_bool_client(configuration)
    yield api
    api.close()


def job(name: str, code: str, deadline: int = 60, **container: Any) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "mlops", "test": name}
    step = {"name": "step", "image": "mlops:test", "command": ["python", "-c", code], **container}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never", "containers": [step]},
            },
        },
    }


async def eventually(check: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def pods_of(api: client.ApiClient, name: str) -> list[Any]:
    core = client.CoreV1Api(api)
    pods = await asyncio.to_thread(core.list_namespaced_pod, NS, label_selector=f"job-name={name}")
    return list(pods.items)


async def test_a_job_runs_completes_and_keeps_its_log(
    cluster: FakeCluster, api: client.ApiClient
) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)

    def follow() -> list[tuple[str, str, list[tuple[str, str]]]]:
        seen = []
        stream = watch.Watch()
        for event in stream.stream(
            batch.list_namespaced_job, NS, label_selector="test=ok", timeout_seconds=10
        ):
            job = event["object"]
            conditions = [(c.type, c.status) for c in (job.status and job.status.conditions) or []]
            seen.append((event["type"], job.metadata.name, conditions))
            if conditions:
                stream.stop()
        return seen

    await asyncio.to_thread(batch.create_namespaced_job, NS, job("other", "pass"))
    watching = asyncio.create_task(asyncio.to_thread(follow))
    await eventually(lambda: len(cluster.emulator[kmock.action.WATCH]) > 0)
    await asyncio.to_thread(batch.create_namespaced_job, NS, job("ok", PRINT_BOTH))
    seen = await asyncio.wait_for(watching, 10)

    assert {name for _, name, _ in seen} == {"ok"}  # the label selector left "other" out
    assert seen[0][0] == "ADDED" and seen[-1] == ("MODIFIED", "ok", [("Complete", "True")])
    stored = (await asyncio.to_thread(batch.read_namespaced_job, "ok", NS)).status
    assert (stored.succeeded, stored.active, stored.completion_time is not None) == (1, 0, True)
    (pod,) = await pods_of(api, "ok")
    assert pod.metadata.name.startswith("ok-") and len(pod.metadata.name) == len("ok-abcde")
    assert pod.metadata.labels["controller-uid"] == cluster.manifests["ok"]["metadata"]["uid"]
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    log = await asyncio.to_thread(core.read_namespaced_pod_log, pod.metadata.name, NS)
    assert sorted(log.splitlines()) == ["err", "out"]
    last = await asyncio.to_thread(
        core.read_namespaced_pod_log, pod.metadata.name, NS, container="step", tail_lines=1
    )
    assert last in ("out\n", "err\n")
    assert sorted(cluster.started) == ["ok", "other"]
    first = next(iter(cluster.emulator[kmock.resource("batch/v1/jobs")]))
    assert first.headers["Authorization"] == "Bearer test-token"  # from the kubeconfig


async def test_the_command_gets_env_and_python_is_this_interpreter(
    cluster: FakeCluster, api: client.ApiClient
) -> None:
    code = "import os, sys; print(os.environ['GREETING'], sys.executable, os.getcwd())"
    env = [{"name": "GREETING", "value": "hello"}, {"name": "S", "valueFrom": {"x": {}}}]
    manifest = job("env", "", command=["python3"], args=["-c", code], env=env)
    await asyncio.to_thread(client.BatchV1Api(api).create_namespaced_job, NS, manifest)
    await cluster.wait_finished("env")
    output = bytes(cluster.logs[cluster.pods["env"]]).decode().split()
    assert output[:2] == ["hello", sys.executable]
    assert Path(output[2]).parent == cluster.workdir


async def test_a_failing_command_fails_the_job(cluster: FakeCluster, api: client.ApiClient) -> None:
    batch = client.BatchV1Api(api)
    await asyncio.to_thread(batch.create_namespaced_job, NS, job("three", "raise SystemExit(3)"))
    await cluster.wait_finished("three")
    status = (await asyncio.to_thread(batch.read_namespaced_job, "three", NS)).status
    (condition,) = status.conditions
    assert (condition.type, condition.status) == ("Failed", "True")
    assert condition.reason == "BackoffLimitExceeded"
    assert (status.failed, status.active, status.succeeded) == (1, 0, None)
    (pod,) = await pods_of(api, "three")
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3
    assert cluster.killed == set()


async def test_the_deadline_kills_the_process(cluster: FakeCluster, api: client.ApiClient) -> None:
    batch = client.BatchV1Api(api)
    started = time.monotonic()
    manifest = job("slow", "import time; time.sleep(30)", deadline=1)
    await asyncio.to_thread(batch.create_namespaced_job, NS, manifest)
    await cluster.wait_finished("slow", timeout=5)
    assert time.monotonic() - started < 4
    status = (await asyncio.to_thread(batch.read_namespaced_job, "slow", NS)).status
    (condition,) = status.conditions
    assert (condition.type, condition.reason) == ("Failed", "DeadlineExceeded")
    assert condition.message == "Job was active longer than specified deadline"
    assert "slow" in cluster.killed and not alive(cluster.pids["slow"])
    (pod,) = await pods_of(api, "slow")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 137  # SIGKILL


async def test_deleting_a_running_job_kills_it(cluster: FakeCluster, api: client.ApiClient) -> None:
    batch = client.BatchV1Api(api)
    sleeper = job("doomed", "import time; time.sleep(30)")
    await asyncio.to_thread(batch.create_namespaced_job, NS, sleeper)
    await eventually(lambda: "doomed" in cluster.pids)
    pid = cluster.pids["doomed"]
    assert alive(pid)
    (pod,) = await pods_of(api, "doomed")
    assert pod.status.phase == "Running"
    delete = batch.delete_namespaced_job
    await asyncio.to_thread(delete, "doomed", NS, propagation_policy="Background")
    await eventually(lambda: not alive(pid))
    assert cluster.killed == {"doomed"}
    await eventually(lambda: cluster.emulator.objects["v1/pods", NS, pod.metadata.name].deleted)
    assert await pods_of(api, "doomed") == []
