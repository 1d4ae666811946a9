"""The README's first command on a clean directory: no variable, no external service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port


def test_serves_health_docs_and_a_first_call_with_nothing_configured(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    port = free_port()
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "mlops", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(log.read_text())
            try:
                health = httpx.get(f"{base}/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    pytest.fail(log.read_text())
                time.sleep(0.2)
        assert health.status_code == 200
        assert (tmp_path / "data" / "mlops.db").exists()
        assert httpx.get(f"{base}/docs").status_code == 200
        assert httpx.get(f"{base}/static-offline-docs/swagger-ui-bundle.js").status_code == 200
        assert httpx.get(f"{base}/api/v1/auth/me").status_code == 401

        made = subprocess.run(
            [sys.executable, "-m", "mlops", "admin", "create-api-key", "--role", "admin"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        key = made.stdout.strip()
        whoami = subprocess.run(
            [sys.executable, "-m", "mlops", "whoami"],
            cwd=tmp_path,
            env={**env, "MLOPS_URL": base, "MLOPS_API_KEY": key},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert whoami.returncode == 0, whoami.stderr
        assert json.loads(whoami.stdout)["role"] == "admin"
        refused = subprocess.run(
            [sys.executable, "-m", "mlops", "whoami"],
            cwd=tmp_path,
            env={**env, "MLOPS_URL": base, "MLOPS_API_KEY": "mlops_wrong"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1
        assert "HTTP 401" in refused.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("route") == "/api/v1/auth/me" for line in lines)
    assert key not in log.read_text()


def test_production_refuses_to_start_without_a_real_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        MLOPS_ENV="production",
        MLOPS_JWT_SECRET="short-secret-value-xyz",
        MLOPS_DATABASE_URL="postgresql+asyncpg://mlops:topsecretpw@127.0.0.1:1/mlops",
    )
    result = subprocess.run(
        [sys.executable, "-m", "mlops", "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "MLOPS_JWT_SECRET" in result.stderr
    output = result.stdout + result.stderr
    assert "short-secret-value-xyz" not in output and "topsecretpw" not in output
