"""``mlops deploy`` as a CI job runs it against a service in its own process: a first version
goes live (exit 0), then a canary of a version that fails on a share of requests is analysed
under traffic and rolled back by the service (exit 1), each weight step and the analysis shown.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BOOTSTRAP_KEY, free_port
from tests.e2e.test_pipeline_cli import mlops
from tests.model_registry import register, rows
from tests.processes import service_env, start_service, stop_service

pytestmark = pytest.mark.slow
MODEL = "bc-rf"
KEY = {"X-API-Key": BOOTSTRAP_KEY}


@pytest.fixture
def service_url(tmp_path: Path) -> Iterator[str]:
    data = tmp_path / "data"
    uri = f"sqlite:///{(data / 'mlflow' / 'mlflow.db').resolve().as_posix()}"
    (data / "mlflow").mkdir(parents=True)
    register(uri, MODEL)
    register(uri, MODEL, "flaky")
    port = free_port()
    process = start_service(service_env(data), port, tmp_path / "service.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_service(process)


def send_traffic(url: str, stop: threading.Event) -> None:
    records = rows(200)
    with httpx.Client(base_url=url, headers=KEY, timeout=10) as client:
        i = 0
        while not stop.is_set():
            client.post("/api/v1/deployments/bc/predict", json={"instances": [records[i % 200]]})
            i += 1


def test_deploy_waits_for_the_version_and_fails_on_a_rolled_back_canary(service_url: str) -> None:
    first = mlops(service_url, "deploy", "bc", "--model", f"{MODEL}:1", "--wait", "--timeout", "60")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "v1 serves all traffic" in first.stdout

    stop = threading.Event()
    traffic = threading.Thread(target=send_traffic, args=(service_url, stop), daemon=True)
    traffic.start()
    try:
        canary = mlops(
            service_url,
            *("deploy", "bc", "--model", f"{MODEL}:2", "--strategy", "canary"),
            *("--canary-steps", "50,100", "--analysis-seconds", "1.5", "--min-requests", "10"),
            *("--wait", "--timeout", "60"),
        )
    finally:
        stop.set()
        traffic.join(10)
    out = canary.stdout
    assert canary.returncode == 1, out + canary.stderr
    assert "weight_step" in out and "v2 50 %" in out
    assert "rolled_back" in out and "canary error rate" in out
    assert "v2 is retired" in out
