"""The README's pipeline on a real Airflow, as a CI job drives it: the service and the CLI in
their own processes, the pipeline file pointed at the ``airflow`` backend (with no step cache,
which Airflow runs do not have). ``--wait`` exits 0; a failing variant exits 1, and the failing
step's Airflow log lines come back through the service's logs endpoint."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.airflow_server import AirflowServer
from tests.conftest import free_port
from tests.e2e.test_pipeline_cli import EXAMPLE, mlops, run_id_of
from tests.processes import service_env, start_service, stop_service

pytestmark = pytest.mark.slow


@pytest.fixture
def service_url(airflow: AirflowServer, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = service_env(
        tmp_path / "data",
        MLOPS_PIPELINE_BACKEND="airflow",
        MLOPS_AIRFLOW__URL=airflow.url,
        MLOPS_AIRFLOW__USERNAME=airflow.username,
        MLOPS_AIRFLOW__PASSWORD=airflow.password,
        MLOPS_AIRFLOW__SPECS_DIR=str(airflow.specs_dir),  # type: ignore[attr-defined]
        MLOPS_AIRFLOW__POLL_SECONDS="0.5",
        MLOPS_AIRFLOW__DAG_PREFIX=f"cli_{uuid.uuid4().hex[:8]}",
    )
    process = start_service(env, port, tmp_path / "service.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_service(process)


def test_the_readme_pipeline_runs_on_airflow_through_the_cli(
    service_url: str, tmp_path: Path
) -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["backend"] = "airflow"
    for step in spec["steps"]:
        step.pop("cache", None)
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(spec))

    applied = mlops(service_url, "pipelines", "apply", "-f", str(pipeline))
    assert applied.returncode == 0, applied.stdout + applied.stderr

    passing = mlops(service_url, "pipelines", "run", spec["name"], "--wait")
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "features" in passing.stdout and "succeeded" in passing.stdout

    failing = mlops(
        service_url, "pipelines", "run", spec["name"], "--param", "min_rows=100000", "--wait"
    )
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "failed" in failing.stdout
    logs = mlops(service_url, "runs", "logs", run_id_of(failing.stdout), "--step", "validate")
    assert logs.returncode == 0, logs.stderr
    assert "Running command:" in logs.stdout  # Airflow's own lines
    assert "min_rows" in logs.stdout or "100000" in logs.stdout, logs.stdout
