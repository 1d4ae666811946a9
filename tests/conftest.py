"""Shared fixtures: the app on both stores (SQLite + in-process, Postgres + Redis).

With CI=true an unreachable Postgres or Redis is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mlops.app import create_app
from mlops.core.database import Base, create_database
from mlops.core.migrations import upgrade_database
from mlops.core.settings import Settings

PG_HOST = os.environ.get("MLOPS_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("MLOPS_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("MLOPS_TEST_PG_USER", "postgres")
REDIS_HOST = os.environ.get("MLOPS_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("MLOPS_TEST_REDIS_PORT", "6379"))
REDIS_TEST_DB = 15
BOOTSTRAP_KEY = "test-bootstrap-admin-key-0123456789abcdef"
JWT_SECRET = "test-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyz"
ROOT = Path(__file__).resolve().parents[1]


def unavailable(reason: str) -> None:
    """Skip on a developer machine; fail in CI, where every service must be up."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def admin_execute(statement: str, database: str = "postgres") -> None:
    import asyncpg

    connection = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def run_blocking(statement: str, database: str = "postgres") -> None:
    """Run an admin statement from sync code, even when an event loop is running here."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, admin_execute(statement, database)).result()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if not port_open(PG_HOST, PG_PORT):
        unavailable(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}")
    name = f"mlops_test_{uuid.uuid4().hex[:10]}"
    run_blocking(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        run_blocking(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not port_open(REDIS_HOST, REDIS_PORT):
        unavailable(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_TEST_DB}"


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except redis.ConnectionError:
        pass  # a test that points at a Redis that is down on purpose
    finally:
        client.close()


def base_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "jwt_secret": JWT_SECRET,
        "bootstrap_admin_key": BOOTSTRAP_KEY,
        "rate_limit": "100000/minute",
        "rate_limit_anonymous": "100000/minute",
        "auth_cache_seconds": 0,
        "log_json": True,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings_factory(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """Settings for the parametrised store; keyword overrides win."""

    def make(**overrides: Any) -> Settings:
        if store == "postgres":
            overrides.setdefault("database_url", request.getfixturevalue("postgres_url"))
            overrides.setdefault("redis_url", request.getfixturevalue("redis_url"))
        return base_settings(tmp_path, **overrides)

    return make


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    return settings_factory()


async def _reset_state(settings: Settings) -> None:
    """Empty every table (children first) before the app, and so its engine, starts."""
    database = create_database(settings)
    try:
        await upgrade_database(database)
        async with database.engine.begin() as connection:
            for table in reversed(Base.metadata.sorted_tables):
                await connection.execute(table.delete())
    finally:
        await database.dispose()


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with its lifespan running, on a clean database and rate-limit store."""
    if settings.redis_dsn:
        flush_redis(settings.redis_dsn)
    await _reset_state(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


def client_for(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as running:
        yield running


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


ADMIN = {"X-API-Key": BOOTSTRAP_KEY}


async def create_key(client: httpx.AsyncClient, role: str, name: str | None = None) -> str:
    response = await client.post(
        "/api/v1/auth/api-keys",
        json={"name": name or f"{role}-key", "role": role},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Airflow for the whole session, started on first use (``tests/airflow_server.py``)."""
    from tests.airflow_server import serve_airflow

    yield from serve_airflow(tmp_path_factory)
