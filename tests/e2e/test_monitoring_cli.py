"""``mlops monitoring drift`` as a CI gate, against a service in its own process: exit 0 and
a table of stable features on a stable window, exit 1 naming the features a shifted window
moved."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import pytest

from tests.e2e.test_deploy_cli import KEY, MODEL, service_url  # noqa: F401 (the fixture)
from tests.e2e.test_pipeline_cli import mlops
from tests.integration.test_drift_api import shifted
from tests.model_registry import rows

pytestmark = pytest.mark.slow


def serve(client: httpx.Client, batches: list[list[dict[str, float]]]) -> datetime:
    for batch in batches:
        answered = client.post("/api/v1/deployments/bc/predict", json={"instances": batch})
        assert answered.status_code == 200, answered.text
    time.sleep(0.01)
    return datetime.now(UTC)


def wait_logged(client: httpx.Client, count: int) -> None:
    deadline = time.monotonic() + 30
    while (
        client.get("/api/v1/monitoring/predictions", params={"deployment": "bc"}).json()["total"]
        < count
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_drift_gate_passes_a_stable_window_and_fails_a_shifted_one(service_url: str) -> None:  # noqa: F811
    deployed = mlops(service_url, "deploy", "bc", "--model", f"{MODEL}:1", "--wait")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with httpx.Client(base_url=service_url, headers=KEY, timeout=30) as client:
        reference = client.put(
            "/api/v1/monitoring/drift/bc/reference",
            json={
                "source": {"dataset": {"uri": "sklearn://breast_cancer", "label_column": "target"}}
            },
        )
        assert reference.status_code == 201, reference.text
        began = datetime.now(UTC)
        stable_end = serve(client, [rows(100), rows(101), rows(102)])
        drifted_end = serve(client, [shifted(rows(103)), shifted(rows(104))])
        wait_logged(client, 5)

    stable = mlops(
        service_url,
        *("monitoring", "drift", "bc", "--since", began.isoformat()),
        *("--until", stable_end.isoformat()),
    )
    assert stable.returncode == 0, stable.stdout + stable.stderr
    assert "mean radius" in stable.stdout and "0 of 30 features drifted" in stable.stdout

    moved = mlops(
        service_url,
        *("monitoring", "drift", "bc", "--since", stable_end.isoformat()),
        *("--until", drifted_end.isoformat()),
    )
    assert moved.returncode == 1, moved.stdout + moved.stderr
    drifted = [
        line
        for line in moved.stdout.splitlines()
        if line.startswith(("mean radius", "mean texture"))
    ]
    assert len(drifted) == 2 and all(" yes " in line for line in drifted), moved.stdout
    assert "2 of 30 features drifted" in moved.stdout
    assert "?format=html" in moved.stdout

    gate_off = mlops(
        service_url,
        *("monitoring", "drift", "bc", "--since", stable_end.isoformat()),
        *("--until", drifted_end.isoformat(), "--fail-on", "never"),
    )
    assert gate_off.returncode == 0, gate_off.stdout + gate_off.stderr
