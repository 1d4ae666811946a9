"""What only the kubernetes backend does: orphaned and vanished Jobs, reachability, credentials."""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp.test_utils
import kmock
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client
from kubernetes.config import incluster_config

from mlops.backends import kubernetes as kubernetes_backend
from mlops.backends.kubernetes import INSTANCE, MANAGED_BY, MANAGER, KubernetesBackend
from tests.api.test_pipeline_backends import kubeconfig as write_kubeconfig
from tests.api.test_pipeline_runs import apply, python_step, start, steps_of, wait_for
from tests.conftest import ADMIN, base_settings, client_for, free_port, running_app
from tests.kmock_cluster import ClusterEmulator, FakeCluster

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
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{free_port()}")
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


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as a cluster's API server would present."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-apiserver")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "ca.crt", folder / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_inside_a_pod_it_uses_the_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    class TLSServer(aiohttp.test_utils.RawTestServer):
        async def start_server(self, **kwargs: Any) -> None:
            await super().start_server(ssl=tls, **kwargs)

    token = tmp_path / "token"
    token.write_text("service-account-token")
    emulator = ClusterEmulator()
    async with emulator, kmock.Server(emulator, server_cls=TLSServer) as server:
        emulator.resources["batch/v1/jobs"] = kmock.ResourceInfo(kind="Job", namespaced=True)
        # what the kubelet mounts into every pod
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
        monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
        monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(cert))
        settings = base_settings(
            tmp_path, kubernetes={"namespace": "mlops", "image": "mlops:test"}
        )  # no kubeconfig: in-cluster
        health = await KubernetesBackend.check_health(settings)
        assert health.ok, health
        assert health.detail == f"namespace mlops at https://127.0.0.1:{server.port}"
        seen = emulator[kmock.resource("batch/v1/jobs")][-1]
        assert seen.headers["Authorization"] == "bearer service-account-token"
