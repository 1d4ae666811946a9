"""Choosing a backend: the list with health, and a 422 for one that is unknown or unconfigured."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from mlops.backends import backend_names
from mlops.core.settings import Settings
from tests.api.test_pipeline_definitions import example
from tests.api.test_pipeline_runs import python_step, wait_for
from tests.conftest import ADMIN, base_settings, client_for, free_port, running_app


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: '{server}'}}}}]\n"
        "users: [{name: u, user: {token: test-token}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u, namespace: ml}}]\n"
        "current-context: c\n"
    )
    return path


async def test_backends_are_listed_with_their_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/pipelines/backends")).status_code == 401
    response = await client.get("/api/v1/pipelines/backends", headers=ADMIN)
    assert response.status_code == 200, response.text
    by_name = {backend["name"]: backend for backend in response.json()}
    assert by_name["local"] | {"detail": ""} == {
        "name": "local",
        "summary": by_name["local"]["summary"],
        "default": True,
        "configured": True,
        "healthy": True,
        "detail": "",
    }
    kubernetes = by_name["kubernetes"]
    assert (kubernetes["default"], kubernetes["configured"], kubernetes["healthy"]) == (
        False,
        False,
        False,
    )
    assert "MLOPS_KUBERNETES__" in kubernetes["detail"]


@pytest.mark.parametrize(
    ("backend", "says"),
    [
        ("mainframe", f"unknown backend 'mainframe'; valid: {', '.join(backend_names())}"),
        ("kubernetes", "backend 'kubernetes' is not configured on this service"),
    ],
)
async def test_a_pipeline_may_only_name_a_configured_backend(
    client: httpx.AsyncClient, backend: str, says: str
) -> None:
    response = await client.post("/api/v1/pipelines", json=example(backend=backend), headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    error = response.json()["errors"][0]
    assert error["field"] == "backend"
    assert says in error["message"]
    if backend == "kubernetes":
        assert "configured: local" in error["message"]


async def test_a_configured_but_unreachable_cluster_is_reported_unhealthy(
    tmp_path: Path,
) -> None:
    server = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = base_settings(
        tmp_path,
        kubernetes={
            "namespace": "ml",
            "image": "mlops:test",
            "kubeconfig": kubeconfig(tmp_path / "kubeconfig", server),
        },
    )
    async with running_app(settings) as app, client_for(app, **ADMIN) as client:
        listed = (await client.get("/api/v1/pipelines/backends")).json()
        kubernetes = next(b for b in listed if b["name"] == "kubernetes")
        assert kubernetes["configured"] is True and kubernetes["healthy"] is False
        assert server in kubernetes["detail"]
        applied = await client.post("/api/v1/pipelines", json=example(backend="kubernetes"))
        assert applied.status_code == 201, applied.text


def test_the_default_backend_must_be_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError, match="MLOPS_PIPELINE_BACKEND: backend 'kubernetes'"):
        base_settings(tmp_path, pipeline_backend="kubernetes")
    monkeypatch.setenv("MLOPS_KUBERNETES__NAMESPACE", "ml")
    monkeypatch.setenv("MLOPS_KUBERNETES__IMAGE", "registry.example/mlops:1.4")
    monkeypatch.setenv("MLOPS_PIPELINE_BACKEND", "kubernetes")
    settings = Settings(data_dir=tmp_path)
    assert settings.kubernetes is not None
    assert (settings.kubernetes.namespace, settings.kubernetes.image) == (
        "ml",
        "registry.example/mlops:1.4",
    )


async def test_a_run_whose_backend_cannot_start_fails_with_the_reason(tmp_path: Path) -> None:
    settings = base_settings(
        tmp_path,
        kubernetes={
            "namespace": "ml",
            "image": "mlops:test",
            "kubeconfig": tmp_path / "missing-kubeconfig",
        },
    )
    async with running_app(settings) as app, client_for(app, **ADMIN) as client:
        spec = {"name": "nowhere", "backend": "kubernetes", "steps": [python_step("a", "noop")]}
        assert (await client.post("/api/v1/pipelines", json=spec)).status_code == 201
        started = await client.post("/api/v1/pipelines/nowhere/runs", json={"params": {}})
        assert started.status_code == 202, started.text
        run = await wait_for(client, started.json()["id"])
    assert run["status"] == "failed", run
    assert "backend 'kubernetes' cannot start" in run["error"], run
    assert "missing-kubeconfig" in run["error"], run
    assert run["steps"][0]["status"] == "skipped", run


async def test_a_whole_run_backend_refuses_step_caching_naming_the_step(tmp_path: Path) -> None:
    settings = base_settings(
        tmp_path,
        airflow={
            "url": f"http://127.0.0.1:{free_port()}",
            "username": "admin",
            "password": "secret",
            "specs_dir": tmp_path / "specs",
        },
    )
    async with running_app(settings) as app, client_for(app, **ADMIN) as client:
        spec = {
            "name": "cached",
            "backend": "airflow",
            "steps": [python_step("a", "noop"), {**python_step("b", "noop", ["a"]), "cache": True}],
        }
        refused = await client.post("/api/v1/pipelines", json=spec)
        assert refused.status_code == 422, refused.text
        error = refused.json()["errors"][0]
        assert error["field"] == "steps.1.cache"
        assert "step caching is not supported by the 'airflow' backend" in error["message"]
        spec["steps"][1]["cache"] = False
        assert (await client.post("/api/v1/pipelines", json=spec)).status_code == 201
