"""The `mlops` command against real databases: migrations, keys, and audit verification."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import select, text, update

from mlops.core.migrations import alembic_config
from mlops.security.audit import verify_chain
from mlops.security.models import AuditEntry
from tests.conftest import ADMIN, base_settings, client_for, create_key, running_app


def mlops(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlops", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def cli_env(tmp_path: Path, database_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env["MLOPS_DATA_DIR"] = str(tmp_path / "data")
    if database_url:
        env["MLOPS_DATABASE_URL"] = database_url
    return env


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return None


def test_db_upgrade_reports_the_revision(tmp_path: Path, database_url: str | None) -> None:
    result = mlops("db", "upgrade", env=cli_env(tmp_path, database_url))
    assert result.returncode == 0, result.stderr
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert f"database at revision {head}" in result.stdout
    again = mlops("db", "upgrade", env=cli_env(tmp_path, database_url))
    assert again.returncode == 0 and head in again.stdout


async def test_cli_key_works_against_the_service(tmp_path: Path, database_url: str | None) -> None:
    settings = base_settings(tmp_path, database_url=database_url)
    async with running_app(settings) as app, client_for(app) as client:
        env = cli_env(tmp_path, database_url)
        result = mlops("admin", "create-api-key", "--role", "ml_engineer", "--name", "cli", env=env)
        assert result.returncode == 0, result.stderr
        key = result.stdout.strip()
        assert key.startswith("mlops_")
        me = await client.get("/api/v1/auth/me", headers={"X-API-Key": key})
        assert me.status_code == 200
        assert me.json()["role"] == "ml_engineer"


def test_create_user_reads_the_password_from_stdin(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    short = mlops(
        "admin",
        "create-user",
        "--username",
        "zed",
        "--role",
        "viewer",
        "--password-stdin",
        env=env,
        stdin="short\n",
    )
    assert short.returncode == 2
    made = mlops(
        "admin",
        "create-user",
        "--username",
        "zed",
        "--role",
        "viewer",
        "--password-stdin",
        env=env,
        stdin="a sufficiently long one\n",
    )
    assert made.returncode == 0, made.stderr
    assert "a sufficiently long one" not in made.stdout + made.stderr


AUDIT_COLUMNS: dict[str, Any] = {
    "occurred_at": datetime(2001, 1, 1, tzinfo=UTC),
    "request_id": "forged",
    "principal": "someone-else",
    "action": "GET /innocent",
    "resource": "/innocent",
    "outcome": "failure",
    "status_code": 200,
    "client_ip": "10.9.9.9",
    "details": {"forged": True},
    "prev_hash": "f" * 64,
    "entry_hash": "e" * 64,
}


async def test_altering_any_audit_column_is_detected(
    tmp_path: Path, database_url: str | None
) -> None:
    settings = base_settings(tmp_path, database_url=database_url)
    async with running_app(settings) as app, client_for(app) as client:
        for index in range(3):
            await create_key(client, "viewer", name=f"a{index}")
        database = app.state.database
        for column, value in AUDIT_COLUMNS.items():
            second = AuditEntry.seq == 2
            async with database.sessionmaker() as session, session.begin():
                original = await session.scalar(select(getattr(AuditEntry, column)).where(second))
                await session.execute(update(AuditEntry).where(second).values({column: value}))
            async with database.sessionmaker() as session:
                verdict = await verify_chain(session)
            assert verdict.broken_seq == 2, column
            async with database.sessionmaker() as session, session.begin():
                await session.execute(update(AuditEntry).where(second).values({column: original}))
        async with database.sessionmaker() as session:
            assert (await verify_chain(session)).intact
        assert (await client.get("/api/v1/audit/verify", headers=ADMIN)).json()["intact"]


async def test_audit_verify_command_names_the_broken_entry(
    tmp_path: Path, database_url: str | None
) -> None:
    settings = base_settings(tmp_path, database_url=database_url)
    env = cli_env(tmp_path, database_url)
    async with running_app(settings) as app, client_for(app) as client:
        for index in range(4):
            await create_key(client, "viewer", name=f"v{index}")
        intact = mlops("audit", "verify", env=env)
        assert intact.returncode == 0, intact.stderr
        assert "4 entries verified" in intact.stdout

        async with app.state.database.engine.begin() as connection:
            await connection.execute(text("UPDATE audit_log SET outcome = 'failure' WHERE seq = 3"))
        broken = mlops("audit", "verify", env=env)
    assert broken.returncode == 1
    assert "broken at entry 3" in broken.stderr
