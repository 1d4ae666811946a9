"""What only the kubernetes backend does: Jobs an earlier process left, an unreachable cluster."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest
from kubernetes import client

from mlops.backends import kubernetes as kubernetes_backend
from mlops.backends.kubernetes import INSTANCE, MANAGED_BY, MANAGER
from tests.api.test_pipeline_runs import apply, python_step, start, steps_of, wait_for
from tests.conftest import ADMIN, base_settings, client_for, free_port, running_app
from tests.kmock_cluster import FakeCluster

pytestmark = pytest.mark.slow


def kubernetes_settings(kubeconfig: Path) -> dict[str, object]:
    return {
        "pipeline_backend": "kubernetes",
        "kubernetes": {"namespace": "mlops", "image": "mlops:test", "kubeconfig": kubeconfig},
    }


async def test_jobs_left_running_by_an_earlier_process_are_stopped(tmp_path: Path) -> None:
    async with FakeCluster("mlops") as cluster:
        orphan = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": "mlops-orphan-1",
                "namespace": "mlops",
                "labels": {MANAGED_BY: MANAGER, INSTANCE: "mlops"},
            },
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": {MANAGED_BY: MANAGER, INSTANCE: "mlops"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "step",
                                "image": "x",
                                "command": ["python", "-c", "import time; time.sleep(60)"],
                            }
                        ],
                    },
                },
            },
        }
        api = cluster.api_client()
        other = copy.deepcopy(orphan)  # another service's, in the same namespace
        other["metadata"]["name"] = "mlops-other-1"
        for labels in (
            other["metadata"]["labels"],
            other["spec"]["template"]["metadata"]["labels"],
        ):
            labels[INSTANCE] = "staging"
        for job in (orphan, other):
            await asyncio.to_thread(client.BatchV1Api(api).create_namespaced_job, "mlops", job)
        while not {"mlops-orphan-1", "mlops-other-1"} <= set(cluster.started):
            await asyncio.sleep(0.05)
        settings = base_settings(tmp_path, **kubernetes_settings(cluster.kubeconfig(tmp_path)))
        async with running_app(settings) as app, client_for(app, **ADMIN) as http:
            await apply(http, {"name": "after-restart", "steps": [python_step("a", "noop")]})
            run = await wait_for(http, (await start(http, "after-restart"))["id"], timeout=30)
        assert run["status"] == "succeeded", run
        assert cluster.killed == {"mlops-orphan-1"}  # not the other service's


async def test_an_unreachable_cluster_fails_the_step_with_the_reason(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{free_port()}'}}}}]\n"
        "users: [{name: u, user: {}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
    )
    settings = base_settings(tmp_path, **kubernetes_settings(kubeconfig))
    async with running_app(settings) as app, client_for(app, **ADMIN) as http:
        await apply(http, {"name": "unreachable", "steps": [python_step("a", "noop")]})
        run = await wait_for(http, (await start(http, "unreachable"))["id"], timeout=60)
    step = steps_of(run)["a"]
    assert (run["status"], step["status"]) == ("failed", "failed"), run
    assert "the cluster is unreachable" in step["error"], step


async def test_an_attempt_whose_job_vanishes_unseen_still_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kubernetes_backend, "RECONCILE_SECONDS", 0.3)
    async with FakeCluster("mlops") as cluster:
        settings = base_settings(tmp_path, **kubernetes_settings(cluster.kubeconfig(tmp_path)))
        async with running_app(settings) as app, client_for(app, **ADMIN) as http:
            step = python_step("wait", "sleep", kwargs={"seconds": 60})
            await apply(http, {"name": "vanishing", "steps": [step]})
            run = await start(http, "vanishing")
            while not cluster.started:
                await asyncio.sleep(0.05)
            # gone from the store with no watch event, as if deleted while the watch was down
            cluster.emulator.objects["batch/v1/jobs", "mlops", cluster.started[0]].delete()
            final = await wait_for(http, run["id"], timeout=20)
    waited = steps_of(final)["wait"]
    assert (final["status"], waited["status"]) == ("failed", "failed"), final
    assert "the Job was deleted outside the service" in waited["error"], waited
