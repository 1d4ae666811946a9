"""A real MLflow tracking server for integration tests: ``mlflow server`` on a fresh PostgreSQL
database, serving its artifacts over HTTP, one worker, on a free loopback port.

A test module imports it, ``from tests.mlflow_server import mlflow_server_fixture  # noqa: F401``,
and asks for ``mlflow_server``: the function's own name differs, so that parameter does not
shadow the import.

With CI=true a server that cannot start fails the test; elsewhere it is skipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    free_port,
    port_open,
    run_blocking,
    unavailable,
)

START_TIMEOUT = 90.0


def _mlflow_command() -> list[str]:
    script = Path(sys.executable).with_name("mlflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlflow"]


def _ready(base: str) -> bool:
    """Ready when an API call answers too: ``/health`` says 200 even to a ``Host`` the guard
    refuses, and before the store answers."""
    try:
        health = httpx.get(f"{base}/health", timeout=2)
        if health.status_code != 200:
            return False
        search = httpx.get(
            f"{base}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=5
        )
        return search.status_code == 200
    except httpx.HTTPError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """The server runs in a process group of its own (uvicorn or gunicorn plus its worker)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session", name="mlflow_server")
def mlflow_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tracking URI (``http://127.0.0.1:PORT``) of a running ``mlflow server``."""
    if not port_open(PG_HOST, PG_PORT):
        unavailable(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} for the MLflow server")
    database = f"mlflow_test_{uuid.uuid4().hex[:10]}"
    run_blocking(f'CREATE DATABASE "{database}"')
    workdir = tmp_path_factory.mktemp("mlflow-server")
    artifacts = workdir / "artifacts"
    artifacts.mkdir()
    log = workdir / "server.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        *_mlflow_command(),
        "server",
        "--backend-store-uri",
        f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}",
        "--artifacts-destination",
        str(artifacts),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--allowed-hosts",
        f"127.0.0.1:{port},localhost:{port}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_"))}
    # No job runner (five huey consumer processes for GenAI jobs, slow to stop): not needed here.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with log.open("ab") as output:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            command,
            cwd=workdir,  # nothing (./mlruns, ./mlartifacts) lands in the repository
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: the CLI and its uvicorn worker
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _ready(base):
            if process.poll() is not None:
                unavailable(f"mlflow server exited ({process.returncode}): {_tail(log)}")
            if time.monotonic() > deadline:
                unavailable(f"mlflow server was not ready in {START_TIMEOUT:.0f} s: {_tail(log)}")
            time.sleep(0.3)
        yield base
    finally:
        _stop(process)
        run_blocking(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"
