"""Alembic migrations run unchanged on SQLite and Postgres and match the ORM models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from mlops.core.database import Base, Database
from mlops.core.migrations import alembic_config, current_revision, upgrade_database
from mlops.domains import import_all_models
from tests.conftest import admin_execute

EXPECTED_TABLES = {
    "users",
    "api_keys",
    "audit_log",
    "pipelines",
    "pipeline_versions",
    "pipeline_runs",
    "step_runs",
    "alembic_version",
}
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
        yield db
        await db.dispose()
        return
    base_url = str(request.getfixturevalue("postgres_url"))
    name = f"{base_url.rsplit('/', 1)[1]}_mig"
    await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin_execute(f'CREATE DATABASE "{name}"')
    db = Database(f"{base_url.rsplit('/', 1)[0]}/{name}")
    try:
        yield db
    finally:
        await db.dispose()
        await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _diff(connection: Connection) -> list[object]:
    import_all_models()
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "render_as_batch": True}
    )
    return list(compare_metadata(context, Base.metadata))


def _downgrade_to_base(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "base")


async def test_upgrade_downgrade_upgrade(database: Database) -> None:
    await upgrade_database(database)
    assert await current_revision(database) == HEAD
    async with database.engine.connect() as connection:
        assert await connection.run_sync(_tables) >= EXPECTED_TABLES
        assert await connection.run_sync(_diff) == []

    async with database.engine.connect() as connection:
        await connection.run_sync(_downgrade_to_base)
        await connection.commit()
    async with database.engine.connect() as connection:
        assert await connection.run_sync(_tables) <= {"alembic_version"}
        version = (await connection.execute(text("SELECT count(*) FROM alembic_version"))).scalar()
        assert version == 0

    await upgrade_database(database)
    await upgrade_database(database)  # idempotent
    assert await current_revision(database) == HEAD
